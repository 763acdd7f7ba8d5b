//! The sqllogictest adapter: runs each record's SQL through the engine, as
//! the role the file last chose, and prints released cells as text.
//!
//! Two lines that are not SQL let a file control the adapter:
//!
//! - `AS ROLE name` (as a `statement ok`) runs the following queries under
//!   that role of the policy;
//! - `SHOW RELEASE` (as a `query II`) returns the last query's cells released
//!   and suppressed, as the audit log records them;
//! - `SHOW METADATA` (as a `query TT`) returns the `seuil.*` metadata of the
//!   last result, as the client sees it, key by key.
//!
//! Floating-point values are printed with two decimals, since parallel sums
//! may differ in their last bits from run to run.

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt;
use seuil_engine::{Engine, ReleaseReport, User};
use sqllogictest::{DBOutput, DefaultColumnType};

/// An error of the adapter: the engine's message, verbatim.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SltError(pub String);

/// One sqllogictest connection to an engine.
pub struct SltDb {
    engine: Engine,
    role: String,
    last_report: Option<ReleaseReport>,
    last_metadata: Vec<(String, String)>,
}

impl SltDb {
    /// A connection that starts as the `researcher` role.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            role: "researcher".into(),
            last_report: None,
            last_metadata: Vec::new(),
        }
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || data_type.is_decimal() {
        DefaultColumnType::FloatingPoint
    } else if data_type.is_string() {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

fn format_cell(array: &dyn Array, row: usize) -> Result<String, SltError> {
    if array.is_null(row) {
        return Ok("NULL".into());
    }
    if let Some(floats) = array
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
    {
        return Ok(format!("{:.2}", floats.value(row)));
    }
    let options = FormatOptions::default();
    let formatter =
        ArrayFormatter::try_new(array, &options).map_err(|e| SltError(e.to_string()))?;
    let text = formatter.value(row).to_string();
    Ok(if text.is_empty() {
        "(empty)".into()
    } else {
        text
    })
}

/// Formats batches as sqllogictest rows.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|column| format_cell(column.as_ref(), row))
                    .collect::<Result<_, _>>()?,
            );
        }
    }
    Ok(rows)
}

#[async_trait]
impl sqllogictest::AsyncDB for SltDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let trimmed = sql.trim();
        if let Some(role) = trimmed.strip_prefix("AS ROLE ") {
            self.role = role.trim().to_string();
            return Ok(DBOutput::StatementComplete(0));
        }
        if trimmed == "SHOW RELEASE" {
            let report = self
                .last_report
                .as_ref()
                .ok_or_else(|| SltError("no query has run yet".into()))?;
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Integer, DefaultColumnType::Integer],
                rows: vec![vec![
                    report.cells_released.to_string(),
                    report.cells_suppressed.to_string(),
                ]],
            });
        }
        if trimmed == "SHOW METADATA" {
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text, DefaultColumnType::Text],
                rows: self
                    .last_metadata
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.clone()])
                    .collect(),
            });
        }
        let user = User::new("slt", self.role.clone());
        let result = self
            .engine
            .query(&user, sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        self.last_report = Some(result.report.clone());
        let mut metadata: Vec<(String, String)> = result
            .schema
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.sort();
        self.last_metadata = metadata;
        let types = result
            .schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let batches: Vec<RecordBatch> = result
            .stream
            .try_collect()
            .await
            .map_err(|e| SltError(e.to_string()))?;
        Ok(DBOutput::Rows {
            types,
            rows: rows(&batches)?,
        })
    }

    fn engine_name(&self) -> &str {
        "seuil"
    }

    async fn shutdown(&mut self) {}
}
