//! What seuil's own aggregate functions (`seuil_persons_up_to`,
//! `seuil_nth_largest`, `seuil_exact_sum`) share: reading a literal argument,
//! and, for their tests, a table whose cells arrive in many partial states.

use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::physical_expr::expressions::Literal;

/// The second argument of a call, which must be a positive integer literal
/// (a bound or a rank fixed by the rewrite); `complaint` says so otherwise.
pub(crate) fn positive_literal_argument(args: &AccumulatorArgs, complaint: &str) -> Result<usize> {
    let value = args
        .exprs
        .get(1)
        .and_then(|e| e.downcast_ref::<Literal>())
        .map(Literal::value);
    match value {
        Some(ScalarValue::Int64(Some(n))) if *n > 0 => Ok(*n as usize),
        _ => exec_err!("{complaint}"),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// The table `t(g, v)` holding `cells[g]` as the values of cell `g`
    /// (`None` for NULL), its rows interleaved across cells and cut into
    /// batches of three rows spread over `partitions` partitions, so that
    /// each cell's values arrive in several partial states that must merge;
    /// `function` is registered.
    pub(crate) fn float_cells_context(
        cells: &[Vec<Option<f64>>],
        partitions: usize,
        config: SessionConfig,
        function: AggregateUDF,
    ) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let longest = cells.iter().map(Vec::len).max().unwrap_or(0);
        let mut rows = Vec::new();
        for i in 0..longest {
            for (g, values) in cells.iter().enumerate() {
                if let Some(value) = values.get(i) {
                    rows.push((g as i64, *value));
                }
            }
        }
        let batches: Vec<RecordBatch> = rows
            .chunks(3)
            .map(|chunk| {
                let g: Int64Array = chunk.iter().map(|(g, _)| Some(*g)).collect();
                let v: Float64Array = chunk.iter().map(|(_, v)| *v).collect();
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(g), Arc::new(v)]).unwrap()
            })
            .collect();
        let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
        for (i, batch) in batches.into_iter().enumerate() {
            parts[i % partitions].push(batch);
        }
        let ctx = SessionContext::new_with_config(config.with_target_partitions(partitions));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
            .unwrap();
        ctx.register_udaf(function);
        ctx
    }

    /// The last column of a query's result.
    pub(crate) async fn last_float_column(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                b.column(b.num_columns() - 1)
                    .as_primitive::<Float64Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The default configuration, and one that gives up on partial
    /// aggregation after the first rows (rows then reach the final
    /// aggregate through `convert_to_state`).
    pub(crate) fn partial_aggregation_configs() -> Vec<(&'static str, SessionConfig)> {
        let mut skipping = SessionConfig::new();
        let execution = &mut skipping.options_mut().execution;
        execution.skip_partial_aggregation_probe_rows_threshold = 1;
        execution.skip_partial_aggregation_probe_ratio_threshold = 0.0;
        vec![
            ("default", SessionConfig::new()),
            ("skipping partial aggregation", skipping),
        ]
    }
}
