//! Comparing released cells with the raw data.

use std::collections::{BTreeMap, HashSet};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::TryStreamExt;
use seuil_engine::{Engine, EngineOptions};

/// A plain DataFusion session over the engine's raw tables, with the same
/// settings as seuil's sessions: the oracle.
pub fn raw_context(engine: &Engine) -> SessionContext {
    let ctx =
        SessionContext::new_with_config(seuil_engine::session_config(&EngineOptions::default()));
    for (name, table) in engine.data().tables() {
        ctx.register_table(name.as_str(), table.clone())
            .expect("registering a raw table");
    }
    ctx
}

/// Cells of a result keyed by their group values (the first
/// `group_columns` columns, printed), with their other values.
pub fn cells(batches: &[RecordBatch], group_columns: usize) -> BTreeMap<String, Vec<ScalarValue>> {
    let mut cells = BTreeMap::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values: Vec<ScalarValue> = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row).expect("a cell value"))
                .collect();
            let key = values[..group_columns]
                .iter()
                .map(|v| {
                    if v.is_null() {
                        "NULL".to_string()
                    } else {
                        v.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ");
            let previous = cells.insert(key.clone(), values[group_columns..].to_vec());
            assert!(previous.is_none(), "two cells with the same key {key}");
        }
    }
    cells
}

/// True when two released values are equal, floats within a relative 1e-9
/// (parallel sums add in different orders).
pub fn same_value(a: &ScalarValue, b: &ScalarValue) -> bool {
    match (a, b) {
        (ScalarValue::Float64(Some(x)), ScalarValue::Float64(Some(y))) => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

/// Runs SQL on a plain session and collects it.
pub async fn run_raw(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("oracle query failed: {e}\n{sql}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("oracle query failed: {e}\n{sql}"))
}

/// How long one query of a property test may take.
pub const QUERY_DEADLINE_SECONDS: u64 = 60;

/// Runs a query through seuil and collects the released batches.
pub async fn run_seuil(
    engine: &Engine,
    user: &seuil_engine::User,
    sql: &str,
) -> Result<(Vec<RecordBatch>, seuil_engine::ReleaseReport), seuil_engine::EngineError> {
    // A query whose release work runs away (secondary suppression of a
    // large table of small cells) stops with a limit error, as it would on
    // the server, instead of holding the test up.
    let deadline = seuil_engine::Deadline::after(QUERY_DEADLINE_SECONDS);
    let result = engine
        .query_before(user, sql, Vec::new(), Some(deadline))
        .await?;
    let report = result.report.clone();
    let batches = result
        .stream
        .try_collect()
        .await
        .map_err(|e| seuil_engine::EngineError::Execution(e.to_string()))?;
    Ok((batches, report))
}

/// Every identifier value of the raw data, in lower case.
pub async fn identifiers(raw: &SessionContext) -> HashSet<String> {
    let sql = "SELECT ben_nir_psa FROM ir_ben_r UNION ALL SELECT ben_nir_ano FROM ir_ben_r \
               UNION ALL SELECT rsa_num FROM t_mco_c";
    let mut ids = HashSet::new();
    for batch in run_raw(raw, sql).await {
        let column = batch.column(0).as_string::<i32>();
        for value in column.iter().flatten() {
            ids.insert(value.to_lowercase());
        }
    }
    ids
}

/// Fails if any released string holds an identifier.
pub fn assert_no_identifier(batches: &[RecordBatch], ids: &HashSet<String>, context: &str) {
    for batch in batches {
        for column in batch.columns() {
            let Ok(text) = datafusion::arrow::compute::cast(
                column,
                &datafusion::arrow::datatypes::DataType::Utf8,
            ) else {
                continue;
            };
            for value in text.as_string::<i32>().iter().flatten() {
                let value = value.to_lowercase();
                assert!(
                    !ids.contains(&value)
                        && (value.len() < 8
                            || !ids
                                .iter()
                                .any(|id| id.contains(&value) || value.contains(id.as_str()))),
                    "a released value holds an identifier: {value}\n{context}"
                );
            }
        }
    }
}
