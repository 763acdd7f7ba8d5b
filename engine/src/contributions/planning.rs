//! How [`super::BoundContributions`] becomes [`BoundContributionsExec`]:
//! the extension planner that builds it with the session's keyed hash, the
//! query planner that knows it, and [`PersonOrderRule`], which keeps the
//! rows below it person by person.

use std::any::Any;
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

use super::exec::BoundContributionsExec;
use super::node::BoundContributions;
use crate::functions::{ContributionChoice, contribution_choice};

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
        let Some(choice) = session
            .scalar_functions()
            .get(contribution_choice::NAME)
            .and_then(|udf| {
                (udf.inner().as_ref() as &dyn Any).downcast_ref::<ContributionChoice>()
            })
        else {
            return plan_err!("this session cannot choose a person's cells");
        };
        Ok(Some(Arc::new(BoundContributionsExec::new(
            Arc::clone(input),
            node.bounds().clone(),
            choice.clone(),
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::execution::TaskContext;
    use datafusion::functions_aggregate::expr_fn::sum;
    use datafusion::logical_expr::{Extension, LogicalPlanBuilder, col, lit};
    use datafusion::physical_plan::{displayable, execute_stream};
    use futures::TryStreamExt;

    use super::*;
    use crate::contributions::{Bounds, PERSONS_KEPT, Partial, partial_name};
    use crate::lineage::PERSON_NUMBER;
    use crate::options::EngineOptions;

    /// Persons 1..=400 in order, each in a few of 5 cells.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("cell", DataType::Utf8, false),
            Field::new(PERSON_NUMBER, DataType::UInt32, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let mut cells = Vec::new();
        let mut persons = Vec::new();
        let mut values = Vec::new();
        for person in 1..=400u32 {
            for row in 0..(person % 7 + 1) {
                cells.push(format!("c{}", (person + row) % 5));
                persons.push(person);
                values.push((row % 3 != 0).then_some(f64::from(row)));
            }
        }
        // Small batches, so that a round robin would deal one person's rows
        // to several partitions.
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(cells)),
                Arc::new(UInt32Array::from(persons)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .unwrap();
        let batches = (0..batch.num_rows())
            .step_by(5)
            .map(|at| batch.slice(at, 5.min(batch.num_rows() - at)))
            .collect();
        MemTable::try_new(schema, vec![batches]).unwrap()
    }

    /// The physical plan of per-cell persons and bounded counts, as a
    /// session with `options` plans it with `partitions`.
    async fn plan(
        options: &EngineOptions,
        partitions: usize,
    ) -> (Arc<dyn ExecutionPlan>, Arc<TaskContext>) {
        let options = EngineOptions {
            target_partitions: Some(partitions),
            ..options.clone()
        };
        let ctx = crate::session::standalone_context(&options);
        ctx.register_table("t", Arc::new(table())).unwrap();
        let rows = ctx
            .table("t")
            .await
            .unwrap()
            .filter(col("v").is_not_null().or(col("cell").eq(lit("c1"))))
            .unwrap()
            .select(vec![col("cell"), col(PERSON_NUMBER), col("v")])
            .unwrap()
            .into_unoptimized_plan();
        let bounds = Bounds {
            groups: 1,
            partials: vec![Partial::Count { cap: 2 }],
            max_groups_per_person: 2,
        };
        let node = BoundContributions::try_new(rows, bounds).unwrap();
        let plan = LogicalPlanBuilder::from(LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }))
        .aggregate(
            vec![col("cell")],
            vec![
                sum(col(PERSONS_KEPT)).alias("persons"),
                sum(col(partial_name(0))).alias("rows"),
            ],
        )
        .unwrap()
        .sort(vec![col("cell").sort(true, false)])
        .unwrap()
        .build()
        .unwrap();
        let state = ctx.state();
        let physical = state
            .create_physical_plan(&state.optimize(&plan).unwrap())
            .await
            .unwrap();
        (physical, ctx.task_ctx())
    }

    /// The plan's cells as text, or its error.
    async fn run(plan: Arc<dyn ExecutionPlan>, task: Arc<TaskContext>) -> Result<String> {
        let batches: Vec<RecordBatch> = execute_stream(plan, task)?.try_collect().await?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    /// What `plan` shows below its bounded contributions.
    fn below_node(plan: &Arc<dyn ExecutionPlan>) -> String {
        let shown = displayable(plan.as_ref()).indent(false).to_string();
        shown
            .split("BoundContributionsExec")
            .nth(1)
            .unwrap_or_else(|| panic!("no bounded contributions in\n{shown}"))
            .to_string()
    }

    #[tokio::test]
    async fn the_rows_below_the_node_stay_in_scan_order() {
        // One contribution key for both sessions.
        let options = EngineOptions::default();
        let (one, task) = plan(&options, 1).await;
        let expected = run(one, Arc::clone(&task)).await.unwrap();
        let (four, task) = plan(&options, 4).await;
        assert!(!below_node(&four).contains("Repartition"));
        assert_eq!(
            run(Arc::clone(&four), Arc::clone(&task)).await.unwrap(),
            expected
        );
        // Batches dealt round-robin below the node: it fails rather than
        // count a person twice, and the rule takes the deal away.
        let spread = four
            .transform_up(|node| {
                if node.is::<DataSourceExec>() {
                    let dealt = RepartitionExec::try_new(node, Partitioning::RoundRobinBatch(4))?;
                    return Ok(Transformed::yes(Arc::new(dealt) as Arc<dyn ExecutionPlan>));
                }
                Ok(Transformed::no(node))
            })
            .data()
            .unwrap();
        assert!(below_node(&spread).contains("RoundRobin"));
        assert!(run(Arc::clone(&spread), Arc::clone(&task)).await.is_err());
        let kept = PersonOrderRule
            .optimize(spread, &ConfigOptions::default())
            .unwrap();
        assert!(!below_node(&kept).contains("Repartition"));
        assert_eq!(run(kept, task).await.unwrap(), expected);
    }
}
