//! The release step: from the computed cells of one released aggregate to the
//! cells that may leave, and the report of what was suppressed and why.
//!
//! It runs on the coordinator, on the final cells, once per released
//! aggregate, before anything the user wrote above the aggregate sees them.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use seuil_policies::{Policy, Role};
use serde::Serialize;

use crate::error::EngineError;
use crate::rules::min_persons::ReleaseStep;

/// Why a cell was not released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// Fewer than `min_persons` distinct persons (rule 2).
    Persons,
}

impl SuppressionReason {
    /// The reason's name in reports and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Persons => "persons",
        }
    }
}

/// What one query released: reported with the result, in the Arrow schema
/// metadata (`seuil.*` keys), and in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseReport {
    /// Policy name.
    pub policy: String,
    /// Policy version.
    pub policy_version: String,
    /// The role the query ran under.
    pub role: String,
    /// Release mode.
    pub mode: String,
    /// Smallest number of distinct persons per released cell.
    pub min_persons: u32,
    /// Number of released aggregates in the query.
    pub released_aggregates: usize,
    /// Cells released, over all released aggregates.
    pub cells_released: u64,
    /// Cells suppressed, over all released aggregates.
    pub cells_suppressed: u64,
    /// Suppressed cells by reason.
    pub suppressed_by_reason: BTreeMap<SuppressionReason, u64>,
}

impl ReleaseReport {
    /// An empty report for a query of `role`.
    pub fn new(policy: &Policy, role: &Role) -> Self {
        Self {
            policy: policy.name.clone(),
            policy_version: policy.version.clone(),
            role: role.name.clone(),
            mode: role.mode.as_str().to_string(),
            min_persons: role.min_persons,
            released_aggregates: 0,
            cells_released: 0,
            cells_suppressed: 0,
            suppressed_by_reason: BTreeMap::new(),
        }
    }

    /// The report as Arrow schema metadata, under `seuil.*` keys.
    pub fn metadata(&self) -> std::collections::HashMap<String, String> {
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("seuil.policy".into(), self.policy.clone());
        metadata.insert("seuil.policy_version".into(), self.policy_version.clone());
        metadata.insert("seuil.role".into(), self.role.clone());
        metadata.insert("seuil.mode".into(), self.mode.clone());
        metadata.insert("seuil.min_persons".into(), self.min_persons.to_string());
        metadata.insert(
            "seuil.released_aggregates".into(),
            self.released_aggregates.to_string(),
        );
        metadata.insert("seuil.cells_released".into(), self.cells_released.to_string());
        metadata.insert("seuil.cells_suppressed".into(), self.cells_suppressed.to_string());
        for (reason, count) in &self.suppressed_by_reason {
            metadata.insert(format!("seuil.suppressed.{}", reason.as_str()), count.to_string());
        }
        metadata
    }
}

/// Applies the release rules of `role` to the computed cells of `step` and
/// stores the released cells where the rest of the plan reads them.
pub fn release(
    step: &ReleaseStep,
    cells: Vec<RecordBatch>,
    role: &Role,
    report: &mut ReleaseReport,
) -> Result<(), EngineError> {
    let released_schema: SchemaRef = Arc::clone(step.released.schema_ref());
    let persons_index = step.output_columns;
    let mut released = Vec::with_capacity(cells.len());
    for batch in cells {
        let persons = batch
            .column(persons_index)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| EngineError::Execution("person counts have an unexpected type".into()))?;
        let keep: BooleanArray = persons
            .iter()
            .map(|n| Some(n.unwrap_or(0) >= i64::from(role.min_persons)))
            .collect();
        let kept = keep.true_count() as u64;
        let dropped = keep.len() as u64 - kept;
        report.cells_released += kept;
        report.cells_suppressed += dropped;
        if dropped > 0 {
            *report
                .suppressed_by_reason
                .entry(SuppressionReason::Persons)
                .or_default() += dropped;
        }
        let filtered = filter_record_batch(&batch, &keep)
            .map_err(|e| EngineError::Execution(format!("filtering cells: {e}")))?;
        let columns = filtered.columns()[..step.output_columns].to_vec();
        let out = RecordBatch::try_new(Arc::clone(&released_schema), columns)
            .map_err(|e| EngineError::Execution(format!("building released cells: {e}")))?;
        released.push(out);
    }
    report.released_aggregates += 1;
    step.released.set(released)
}
