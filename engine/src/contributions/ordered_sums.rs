//! Where the sums of sensitive columns read their rows in person order:
//! [`OrderedSumsRule`] marks the calls of
//! [`crate::functions::person_sums`] that read a scan of one keyed table
//! partition by partition, so that each cell closes a person as soon as
//! the next one comes instead of keeping a run per (cell, person) for the
//! end (about fifteen million runs for the claims of a million persons).
//!
//! The keyed tables of the person index are one file each, sorted by
//! person number ([`crate::person_index`]); a scan of one file is cut into
//! byte ranges, one per partition, each read in order. A call may then read
//! in person order when, between its aggregate and that scan, every
//! operator keeps its input's rows, their order and their partitions
//! (filters and projections), and its person is the scan's person number
//! column, not a value computed from it. DataFusion's round-robin
//! repartition above the scan is taken away, as for the dp pass
//! ([`super::planning::PersonOrderRule`]). Anything else keeps the plan
//! as it is. The function checks the order itself as it reads, so a plan
//! this rule misjudged fails rather than count a person twice.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use crate::functions::person_sums::{PersonSums, in_person_order};
use crate::lineage::PERSON_NUMBER;

/// Marks the calls of `seuil_person_sums` whose rows come in person order
/// (see the module's documentation).
#[derive(Debug, Default)]
pub struct OrderedSumsRule;

impl PhysicalOptimizerRule for OrderedSumsRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            // The aggregates that read rows; the others read partial states.
            let reads_rows = matches!(
                aggregate.mode(),
                AggregateMode::Partial | AggregateMode::Single
            );
            let sums: Vec<_> = aggregate
                .aggr_expr()
                .iter()
                .filter(|call| call.fun().name() == PersonSums::NAME)
                .collect();
            if !reads_rows || sums.is_empty() {
                return Ok(Transformed::no(node));
            }
            // Each call's person, as a column of the aggregate's input.
            let persons: Option<Vec<usize>> = sums
                .iter()
                .map(|call| {
                    call.expressions()
                        .first()
                        .and_then(|person| person.downcast_ref::<Column>())
                        .map(Column::index)
                })
                .collect();
            let Some(persons) = persons else {
                return Ok(Transformed::no(node));
            };
            let Some(input) = person_ordered(Arc::clone(aggregate.input()), &persons)? else {
                return Ok(Transformed::no(node));
            };
            let calls = aggregate
                .aggr_expr()
                .iter()
                .map(|call| in_person_order(call).map_or_else(|| Arc::clone(call), Arc::new))
                .collect::<Vec<_>>();
            let marked: Arc<dyn ExecutionPlan> = Arc::new(aggregate.with_new_aggr_exprs(calls));
            Ok(Transformed::yes(replace_children_if_necessary(
                marked,
                vec![input],
            )?))
        })
        .data()
    }

    fn name(&self) -> &str {
        "seuil_ordered_sums"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` without its round-robin repartitions when its rows come from a
/// scan of one file through operators that keep their rows' order and
/// partitions, and its columns `persons` are that scan's person number
/// column; `None` otherwise.
fn person_ordered(
    plan: Arc<dyn ExecutionPlan>,
    persons: &[usize],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
        if !matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_)) {
            return Ok(None);
        }
        // The same columns, the scan's partitions.
        return person_ordered(Arc::clone(repartition.input()), persons);
    }
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        return Ok(scans_one_file_by_person(scan, persons).then_some(plan));
    }
    // The input's columns that `persons` are, through an operator that
    // keeps its input's rows in order, partition for partition.
    let below: Option<Vec<usize>> = if plan.is::<CooperativeExec>() {
        Some(persons.to_vec())
    } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        match filter.projection() {
            Some(projection) => persons
                .iter()
                .map(|p| projection.get(*p).copied())
                .collect(),
            None => Some(persons.to_vec()),
        }
    } else if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        persons
            .iter()
            .map(|p| {
                projection
                    .expr()
                    .get(*p)
                    .and_then(|e| e.expr.downcast_ref::<Column>())
                    .map(Column::index)
            })
            .collect()
    } else {
        None
    };
    let Some(below) = below else {
        return Ok(None);
    };
    let children = plan.children();
    let [input] = children.as_slice() else {
        return Ok(None);
    };
    let Some(kept) = person_ordered(Arc::clone(input), &below)? else {
        return Ok(None);
    };
    // The plan as it is when nothing below it changed.
    replace_children_if_necessary(plan, vec![kept]).map(Some)
}

/// Whether `scan` reads one file, each partition one byte range of it (or
/// the whole), and its columns `persons` are the person number column that
/// the keyed tables are sorted by.
fn scans_one_file_by_person(scan: &DataSourceExec, persons: &[usize]) -> bool {
    let Some(files) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return false;
    };
    let schema = scan.schema();
    let person_numbers = persons.iter().all(|p| {
        schema
            .fields()
            .get(*p)
            .is_some_and(|f| f.name() == PERSON_NUMBER)
    });
    let mut paths = files.file_groups.iter().map(|group| match group.files() {
        [file] => Some(file.path()),
        _ => None,
    });
    let Some(Some(first)) = paths.next() else {
        return false;
    };
    person_numbers && paths.all(|path| path == Some(first))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::physical_expr::expressions::Literal;
    use datafusion::physical_plan::{ExecutionPlanProperties, collect};
    use datafusion::prelude::{ParquetReadOptions, SessionContext, col};
    use datafusion::scalar::ScalarValue;

    use super::*;
    use crate::functions::person_sums::{SUM_FIELD, person_sums, top_field};
    use crate::options::EngineOptions;

    /// Persons 1..=600 in order, each with rows in one of 5 cells, with
    /// fractional values whose sums round differently in other orders.
    fn rows() -> RecordBatch {
        let (mut cells, mut persons, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for person in 1..=600u32 {
            for k in 0..(person % 9 + 3) {
                // Each person's rows in one cell, so that a cut between
                // partitions splits a person within a cell.
                cells.push(i64::from(person % 5));
                persons.push(person);
                values
                    .push((k % 4 != 2).then(|| f64::from((person * 13 + k * 7) % 50) * 0.37 - 1.3));
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("cell", DataType::Int64, false),
            Field::new(PERSON_NUMBER, DataType::UInt32, true),
            Field::new("v", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(cells)),
                Arc::new(UInt32Array::from(persons)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .unwrap()
    }

    /// A session of the engine's, reading `rows` from a Parquet file of
    /// small row groups cut into byte ranges over three partitions.
    async fn over_parquet(dir: &std::path::Path, rows: &RecordBatch) -> SessionContext {
        let path = dir.join("keyed.parquet");
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(64))
            .build();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = ArrowWriter::try_new(file, rows.schema(), Some(properties)).unwrap();
        writer.write(rows).unwrap();
        writer.close().unwrap();
        let options = EngineOptions {
            target_partitions: Some(3),
            ..EngineOptions::default()
        };
        let ctx = crate::session::context(&options, Arc::new(Default::default()));
        ctx.sql("SET datafusion.optimizer.repartition_file_min_size = 0")
            .await
            .unwrap();
        ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx
    }

    /// Per cell: (cell, clamped sum, two largest contributions), and the
    /// physical plan that computed them.
    async fn sums_of(ctx: &SessionContext) -> (Vec<(i64, f64, f64, f64)>, Arc<dyn ExecutionPlan>) {
        let frame = ctx
            .table("t")
            .await
            .unwrap()
            .filter(col("cell").not_eq(datafusion::prelude::lit(4)))
            .unwrap()
            .aggregate(
                vec![col("cell")],
                vec![person_sums(col(PERSON_NUMBER), col("v"), (0.0, 12.0), 2, None).alias("s")],
            )
            .unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        let mut cells = Vec::new();
        for batch in collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap() {
            let keys = batch.column(0).as_primitive::<Int64Type>();
            let s = batch.column(1).as_struct();
            let field = |name: &str| {
                s.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>()
                    .clone()
            };
            let (sum, top1, top2) = (field(SUM_FIELD), field(&top_field(1)), field(&top_field(2)));
            for row in 0..batch.num_rows() {
                cells.push((
                    keys.value(row),
                    sum.value(row),
                    top1.value(row),
                    top2.value(row),
                ));
            }
        }
        cells.sort_by_key(|c| c.0);
        (cells, plan)
    }

    /// The partial aggregates' person order flags.
    fn flags(plan: &Arc<dyn ExecutionPlan>) -> Vec<bool> {
        let mut flags = Vec::new();
        plan.apply(|node| {
            if let Some(aggregate) = node.downcast_ref::<AggregateExec>()
                && matches!(
                    aggregate.mode(),
                    AggregateMode::Partial | AggregateMode::Single
                )
            {
                for call in aggregate.aggr_expr() {
                    if let Some(Some(literal)) = call
                        .expressions()
                        .get(4)
                        .map(|e| e.downcast_ref::<Literal>().cloned())
                    {
                        flags.push(literal.value() == &ScalarValue::Boolean(Some(true)));
                    }
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        flags
    }

    #[tokio::test]
    async fn sums_over_a_keyed_file_read_in_person_order_are_those_of_any_order() {
        let rows = rows();
        let dir = tempfile::tempdir().unwrap();
        let ctx = over_parquet(dir.path(), &rows).await;
        let (ordered, plan) = sums_of(&ctx).await;
        assert_eq!(
            flags(&plan),
            vec![true],
            "{}",
            datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
        );
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        assert!(!shown.contains("RoundRobin"), "{shown}");
        // The file is read as three byte ranges: persons cut between them.
        let mut scans = Vec::new();
        plan.apply(|node| {
            if node.is::<DataSourceExec>() {
                scans.push(Arc::clone(node));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        let [scan] = scans.as_slice() else {
            panic!("one scan in {shown}");
        };
        assert_eq!(scan.output_partitioning().partition_count(), 3, "{shown}");
        // And a person's rows are cut between two of them.
        let mut edges = Vec::new();
        for partition in 0..scan.output_partitioning().partition_count() {
            let stream = scan.execute(partition, ctx.task_ctx()).unwrap();
            let batches: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(stream).await.unwrap();
            let persons: Vec<u32> = batches
                .iter()
                .flat_map(|b| {
                    b.column(1)
                        .as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
                        .values()
                        .to_vec()
                })
                .collect();
            edges.push((persons.first().copied(), persons.last().copied()));
        }
        assert!(
            edges
                .windows(2)
                .any(|w| w[0].1.is_some() && w[0].1 == w[1].0),
            "{edges:?}"
        );

        // The same rows from memory, dealt round-robin in small batches:
        // the rule leaves that plan as it is.
        let memory = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(3),
        );
        crate::functions::register(&memory);
        let batches: Vec<RecordBatch> = (0..rows.num_rows())
            .step_by(7)
            .map(|at| rows.slice(at, 7.min(rows.num_rows() - at)))
            .collect();
        memory
            .register_table(
                "t",
                Arc::new(MemTable::try_new(rows.schema(), vec![batches]).unwrap()),
            )
            .unwrap();
        let (unordered, plan) = sums_of(&memory).await;
        assert!(flags(&plan).iter().all(|flag| !flag));
        assert_eq!(ordered, unordered);
        assert!(ordered.len() == 4 && ordered.iter().all(|c| c.1 > 0.0));
    }

    #[tokio::test]
    async fn a_person_computed_from_the_number_is_not_read_in_person_order() {
        let rows = rows();
        let dir = tempfile::tempdir().unwrap();
        let ctx = over_parquet(dir.path(), &rows).await;
        // A person that is not the scan's column, though computed from it.
        let frame = ctx
            .table("t")
            .await
            .unwrap()
            .aggregate(
                vec![col("cell")],
                vec![
                    person_sums(
                        datafusion::prelude::lit(1000u32) - col(PERSON_NUMBER),
                        col("v"),
                        (0.0, 12.0),
                        1,
                        None,
                    )
                    .alias("s"),
                ],
            )
            .unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        assert!(flags(&plan).iter().all(|flag| !flag));
        assert_eq!(
            frame
                .collect()
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            5
        );
    }
}
