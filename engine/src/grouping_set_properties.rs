//! What the output of a `GROUPING SETS` aggregate may be assumed to be: no
//! ordering, no constant column and no partitioning by its group columns.
//!
//! DataFusion 55 derives a grouping-set aggregate's output properties from
//! its input's as if every group column kept its values. It does not: each
//! set replaces the columns it leaves out with NULL. A column that a filter
//! made constant (`WHERE ben_sex_cod = 1 GROUP BY CUBE(ben_sex_cod, ...)`)
//! is then taken to be constant above the aggregate too, and the final
//! aggregate groups "partially sorted" on it: it emits a group as soon as
//! the column seems to change, before all the group's rows have arrived.
//! The same group comes out several times, each with part of its rows. In
//! the per-person plans that means one person counted twice in a cell,
//! which is a person count the threshold cannot trust. (Upstream:
//! apache/datafusion#24421, fixed after 55.2.)
//!
//! [`GroupingSetOutputRule`] runs first among the physical optimizer rules
//! and puts an [`UnassumingExec`] above every grouping-set aggregate: it
//! passes batches through unchanged and claims nothing about them, so every
//! operator above, and every later rule, plans with true properties.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};

/// The physical optimizer rule that wraps every grouping-set aggregate in
/// an [`UnassumingExec`].
#[derive(Debug, Default)]
pub struct GroupingSetOutputRule;

impl PhysicalOptimizerRule for GroupingSetOutputRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let wraps_grouping_sets = node
                .downcast_ref::<AggregateExec>()
                .is_some_and(|aggregate| aggregate.group_expr().has_grouping_set());
            if wraps_grouping_sets {
                Ok(Transformed::yes(Arc::new(UnassumingExec::new(node)) as _))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "seuil_grouping_set_output"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Its input's batches, with no claim on their order, constants or
/// partitioning.
#[derive(Debug)]
pub struct UnassumingExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl UnassumingExec {
    /// Wraps `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for UnassumingExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "UnassumingExec")
    }
}

impl ExecutionPlan for UnassumingExec {
    fn name(&self) -> &str {
        "UnassumingExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self::new(input))),
            _ => datafusion::common::internal_err!("UnassumingExec takes one input"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::options::EngineOptions;
    use crate::session::standalone_context;

    const PERSONS: i64 = 20_000;

    /// Three rows of each person, with `k` = 1 and three values of `g`, in
    /// two partitions of batches of 1,000 rows: a person's finest cells
    /// reach the grouping sets in different batches.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("person", DataType::Int64, false),
            Field::new("k", DataType::Int64, false),
            Field::new("g", DataType::Int64, false),
        ]));
        let partitions = (0..2)
            .map(|part| {
                let rows: Vec<(i64, i64)> = (0..PERSONS)
                    .filter(|p| p % 2 == part)
                    .flat_map(|p| (0..3).map(move |j| (p, (p + j) % 7)))
                    .collect();
                rows.chunks(1_000)
                    .map(|chunk| {
                        RecordBatch::try_new(
                            Arc::clone(&schema),
                            vec![
                                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.0))),
                                Arc::new(Int64Array::from(vec![1; chunk.len()])),
                                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.1))),
                            ],
                        )
                        .expect("batch")
                    })
                    .collect()
            })
            .collect();
        MemTable::try_new(schema, partitions).expect("table")
    }

    /// Persons counted in the grand total of a per-person CUBE whose `k`
    /// a filter makes constant.
    async fn grand_total_persons(ctx: &SessionContext) -> i64 {
        ctx.register_table("t", Arc::new(table()))
            .expect("register");
        let sql = "WITH per_person AS (
                SELECT person, k, g, count(*) AS n FROM t WHERE k = 1 GROUP BY person, k, g
            ), per_set AS (
                SELECT person, k, g, grouping(k) AS gk, grouping(g) AS gg, sum(n) AS n
                FROM per_person GROUP BY CUBE(k, g), person
            )
            SELECT count(person) FROM per_set WHERE gk = 1 AND gg = 1";
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let column = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count");
        assert_eq!(column.len(), 1);
        column.value(0)
    }

    #[tokio::test]
    async fn a_grouping_set_total_counts_each_person_once() {
        let options = EngineOptions {
            target_partitions: Some(2),
            ..EngineOptions::default()
        };
        assert_eq!(
            grand_total_persons(&standalone_context(&options)).await,
            PERSONS
        );
    }

    /// DataFusion alone gets it wrong; when it no longer does, the rule
    /// (and this module) can go.
    #[tokio::test]
    async fn datafusion_alone_counts_persons_twice() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        assert_ne!(grand_total_persons(&ctx).await, PERSONS);
    }
}
