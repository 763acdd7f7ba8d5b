//! How [`super::BoundContributions`] becomes [`BoundContributionsExec`]:
//! the extension planner that builds it with the session's keyed hash, the
//! query planner that knows it, and [`PersonOrderRule`], which keeps the
//! rows below it person by person.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, internal_err, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use super::{BoundContributions, BoundContributionsExec};
use crate::functions::contribution_choice;

/// Plans [`BoundContributions`] nodes.
#[derive(Debug, Default)]
pub struct BoundContributionsPlanner;

#[async_trait]
impl ExtensionPlanner for BoundContributionsPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<BoundContributions>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("bounded contributions take one input");
        };
        // The hash under this session's key: a plan never carries it.
        let Some(choice) = session.scalar_functions().get(contribution_choice::NAME) else {
            return plan_err!("this session cannot choose a person's cells");
        };
        Ok(Some(Arc::new(BoundContributionsExec::new(
            Arc::clone(input),
            node.bounds().clone(),
            Arc::clone(choice),
            Arc::clone(node.schema().inner()),
        ))))
    }
}

/// DataFusion's planner, with seuil's extension nodes.
#[derive(Debug, Default)]
pub struct SeuilQueryPlanner;

#[async_trait]
impl QueryPlanner for SeuilQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(BoundContributionsPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Keeps the scan's partitions below each [`BoundContributionsExec`]:
/// DataFusion spreads a scan's batches round-robin over more partitions to
/// use every core, which would deal one person's rows to several of them.
/// The scan's own partitions are byte ranges of its files, each in person
/// order, which the node reads and joins at their edges.
#[derive(Debug, Default)]
pub struct PersonOrderRule;

impl PhysicalOptimizerRule for PersonOrderRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !node.is::<BoundContributionsExec>() {
                return Ok(Transformed::no(node));
            }
            let children = node.children();
            let [input] = children.as_slice() else {
                return internal_err!("bounded contributions take one input");
            };
            let kept = in_scan_order(Arc::clone(input))?;
            if Arc::ptr_eq(&kept, input) {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(replace_children_if_necessary(
                node,
                vec![kept],
            )?))
        })
        .data()
    }

    fn name(&self) -> &str {
        "seuil_person_order"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` without the round-robin repartitions between it and its scan,
/// through the operators that keep the order of their rows.
fn in_scan_order(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(repartition) = plan.downcast_ref::<RepartitionExec>()
        && matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_))
    {
        return in_scan_order(Arc::clone(repartition.input()));
    }
    let keeps_order =
        plan.is::<FilterExec>() || plan.is::<ProjectionExec>() || plan.is::<CooperativeExec>();
    if !keeps_order {
        return Ok(plan);
    }
    let children = plan.children();
    let [input] = children.as_slice() else {
        return Ok(plan);
    };
    let kept = in_scan_order(Arc::clone(input))?;
    if Arc::ptr_eq(&kept, input) {
        return Ok(plan);
    }
    replace_children_if_necessary(plan, vec![kept])
}
