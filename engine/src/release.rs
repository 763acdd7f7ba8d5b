//! The release step: from the computed cells of one released aggregate to the
//! cells that may leave, and the report of what was suppressed and why.
//!
//! It runs on the coordinator, once per released aggregate, on the final
//! cells, before anything the user wrote above the aggregate sees them, in
//! this order:
//!
//! 1. primary suppression: cells of fewer than `min_persons` persons
//!    (rule 2), and cells of a sensitive sum dominated by their largest
//!    persons, by the (n, k) rule or the p% rule (rule 6);
//! 2. secondary suppression, for tables with margins (rule 7);
//! 3. rounding of released counts and sums, if the role asks for it, after
//!    suppression and never before, so that rounding cannot release a cell.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt64Array,
};
use datafusion::arrow::compute::{
    SortColumn, cast, concat_batches, filter_record_batch, lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::scalar::ScalarValue;
use serde::Serialize;
use seuil_policies::{Policy, Role};

use crate::error::EngineError;
use crate::rules::magnitudes::{CellsLayout, MeasureKind};
use crate::rules::margins::{MarginTable, secondary_suppression};
use crate::rules::min_persons::ReleaseStep;

/// Why a cell was not released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// Fewer than `min_persons` distinct persons (rule 2).
    Persons,
    /// A sensitive sum dominated by its largest persons (rule 6).
    Dominance,
    /// Hidden so that margins cannot give a suppressed cell back (rule 7).
    Secondary,
}

impl SuppressionReason {
    /// The reason's name in reports and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Persons => "persons",
            SuppressionReason::Dominance => "dominance",
            SuppressionReason::Secondary => "secondary",
        }
    }
}

/// One suppressed cell: which aggregate, which margin, and why. The cell's
/// coordinates are not given: that a small cell exists is itself something
/// about persons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuppressedCell {
    /// Which released aggregate of the query (from 0).
    pub aggregate: usize,
    /// For tables with margins, the group columns the cell is broken down by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Vec<String>>,
    /// Why.
    pub reason: SuppressionReason,
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
    /// Rounding base of released counts and sums, if any.
    pub rounding: Option<u32>,
    /// Number of released aggregates in the query.
    pub released_aggregates: usize,
    /// Cells released, over all released aggregates.
    pub cells_released: u64,
    /// Cells suppressed, over all released aggregates.
    pub cells_suppressed: u64,
    /// Suppressed cells by reason.
    pub suppressed_by_reason: BTreeMap<SuppressionReason, u64>,
    /// Each suppressed cell's reason.
    pub suppressed_cells: Vec<SuppressedCell>,
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
            rounding: role.rounding,
            released_aggregates: 0,
            cells_released: 0,
            cells_suppressed: 0,
            suppressed_by_reason: BTreeMap::new(),
            suppressed_cells: Vec::new(),
        }
    }

    /// The keys known before the query runs: policy, role, mode, threshold.
    pub fn static_metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        metadata.insert("seuil.policy".into(), self.policy.clone());
        metadata.insert("seuil.policy_version".into(), self.policy_version.clone());
        metadata.insert("seuil.role".into(), self.role.clone());
        metadata.insert("seuil.mode".into(), self.mode.clone());
        metadata.insert("seuil.min_persons".into(), self.min_persons.to_string());
        if let Some(base) = self.rounding {
            metadata.insert("seuil.rounding".into(), base.to_string());
        }
        metadata
    }

    /// The report as Arrow schema metadata, under `seuil.*` keys.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = self.static_metadata();
        metadata.insert(
            "seuil.released_aggregates".into(),
            self.released_aggregates.to_string(),
        );
        metadata.insert(
            "seuil.cells_released".into(),
            self.cells_released.to_string(),
        );
        metadata.insert(
            "seuil.cells_suppressed".into(),
            self.cells_suppressed.to_string(),
        );
        for (reason, count) in &self.suppressed_by_reason {
            metadata.insert(
                format!("seuil.suppressed.{}", reason.as_str()),
                count.to_string(),
            );
        }
        if let Ok(cells) = serde_json::to_string(&self.suppressed_cells) {
            metadata.insert("seuil.suppressed_cells".into(), cells);
        }
        metadata
    }

    fn suppress(&mut self, cell: SuppressedCell) {
        *self.suppressed_by_reason.entry(cell.reason).or_default() += 1;
        self.cells_suppressed += 1;
        self.suppressed_cells.push(cell);
    }
}

fn execution(message: impl std::fmt::Display) -> EngineError {
    EngineError::Execution(format!("release step: {message}"))
}

fn as_f64(column: &ArrayRef) -> Result<Float64Array, EngineError> {
    let converted = cast(column, &DataType::Float64).map_err(execution)?;
    converted
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| execution("a measure is not numeric"))
}

/// The primary suppression of each cell, if any.
fn primary(
    cells: &RecordBatch,
    layout: &CellsLayout,
    role: &Role,
) -> Result<Vec<Option<SuppressionReason>>, EngineError> {
    let rows = cells.num_rows();
    let persons = cast(cells.column(layout.persons), &DataType::Int64).map_err(execution)?;
    let persons = persons
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| execution("person counts are not integers"))?;
    let mut reasons: Vec<Option<SuppressionReason>> = (0..rows)
        .map(|row| {
            let n = if persons.is_null(row) {
                0
            } else {
                persons.value(row)
            };
            (n < i64::from(role.min_persons)).then_some(SuppressionReason::Persons)
        })
        .collect();
    for dominance in &layout.dominance {
        let total = as_f64(cells.column(dominance.total))?;
        let largest = dominance
            .largest
            .iter()
            .map(|c| as_f64(cells.column(*c)))
            .collect::<Result<Vec<_>, _>>()?;
        let value = |array: &Float64Array, row: usize| {
            if array.is_null(row) {
                0.0
            } else {
                array.value(row).abs()
            }
        };
        for (row, reason) in reasons.iter_mut().enumerate() {
            if reason.is_some() {
                continue;
            }
            let total = value(&total, row);
            if total <= 0.0 {
                continue;
            }
            let top: Vec<f64> = largest.iter().map(|a| value(a, row)).collect();
            let dominated_nk = role.dominance.is_some_and(|rule| {
                let n = (rule.n as usize).min(top.len());
                top[..n].iter().sum::<f64>() > rule.k / 100.0 * total
            });
            let dominated_p = role.p_percent.is_some_and(|p| {
                let first = top.first().copied().unwrap_or(0.0);
                let second = top.get(1).copied().unwrap_or(0.0);
                // The second largest person knows its own share and the total:
                // the rest bounds its estimate of the largest one.
                total - first - second < p / 100.0 * first
            });
            if dominated_nk || dominated_p {
                *reason = Some(SuppressionReason::Dominance);
            }
        }
    }
    Ok(reasons)
}

/// Reads the cells of a table with margins for secondary suppression.
fn margin_table(
    cells: &RecordBatch,
    layout: &CellsLayout,
    dimensions: usize,
    gid_column: usize,
) -> Result<MarginTable, EngineError> {
    let rows = cells.num_rows();
    let keys = (0..rows)
        .map(|row| {
            (0..dimensions)
                .map(|c| ScalarValue::try_from_array(cells.column(c), row).map_err(execution))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let gid = cast(cells.column(gid_column), &DataType::UInt64).map_err(execution)?;
    let gid = gid
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| execution("grouping ids are not integers"))?;
    let mask = (1u64 << dimensions) - 1;
    let masks = (0..rows).map(|row| gid.value(row) & mask).collect();
    let mut measures = Vec::new();
    let mut non_negative = Vec::new();
    for (position, kind) in layout.measures.iter().enumerate() {
        if !kind.is_additive() {
            continue;
        }
        let values = as_f64(cells.column(layout.group_columns + position))?;
        let values: Vec<f64> = (0..rows)
            .map(|row| {
                if values.is_null(row) {
                    0.0
                } else {
                    values.value(row)
                }
            })
            .collect();
        non_negative.push(*kind == MeasureKind::Count || values.iter().all(|v| *v >= 0.0));
        measures.push(values);
    }
    Ok(MarginTable {
        keys,
        masks,
        measures,
        non_negative,
    })
}

/// Rounds a released count or sum to the nearest multiple of `base`.
fn round_column(column: &ArrayRef, base: u32) -> Result<ArrayRef, EngineError> {
    let base = f64::from(base);
    let values = as_f64(column)?;
    let rounded: Float64Array = values
        .iter()
        .map(|v| v.map(|v| (v / base).round() * base))
        .collect();
    cast(&(Arc::new(rounded) as ArrayRef), column.data_type()).map_err(execution)
}

/// Applies the release rules of `role` to the computed cells of `step` and
/// stores the released cells where the rest of the plan reads them. Returns
/// the time spent in secondary suppression (none for tables without margins).
pub fn release(
    step: &ReleaseStep,
    cells: Vec<RecordBatch>,
    role: &Role,
    report: &mut ReleaseReport,
) -> Result<Duration, EngineError> {
    let layout = &step.layout;
    let schema: SchemaRef = match cells.first() {
        Some(batch) => batch.schema(),
        None => Arc::new(step.cells.schema().as_arrow().clone()),
    };
    let mut cells = concat_batches(&schema, &cells).map_err(execution)?;
    if layout.grouping.is_some() && cells.num_rows() > 1 {
        // The secondary suppression breaks ties by position: give it the
        // cells in one order, whatever order the parallel aggregation made.
        let sort_columns: Vec<SortColumn> = (0..layout.group_columns)
            .map(|c| SortColumn {
                values: Arc::clone(cells.column(c)),
                options: None,
            })
            .collect();
        let order = lexsort_to_indices(&sort_columns, None).map_err(execution)?;
        let columns = cells
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &order, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(execution)?;
        cells = RecordBatch::try_new(cells.schema(), columns).map_err(execution)?;
    }
    let mut reasons = primary(&cells, layout, role)?;

    let mut breakdowns: Vec<Option<Vec<String>>> = vec![None; cells.num_rows()];
    let mut secondary_time = Duration::ZERO;
    if let Some((dimensions, gid_column)) = layout.grouping {
        let started = Instant::now();
        let table = margin_table(&cells, layout, dimensions, gid_column)?;
        let names: Vec<String> = (0..dimensions)
            .map(|c| schema.field(c).name().clone())
            .collect();
        for (row, mask) in table.masks.iter().enumerate() {
            breakdowns[row] = Some(
                (0..dimensions)
                    .filter(|c| mask & (1 << (dimensions - 1 - c)) == 0)
                    .map(|c| names[c].clone())
                    .collect(),
            );
        }
        let primary: Vec<bool> = reasons.iter().map(Option::is_some).collect();
        for cell in secondary_suppression(&table, dimensions, &primary, role.protection_percent) {
            reasons[cell] = Some(SuppressionReason::Secondary);
        }
        secondary_time = started.elapsed();
    }

    for (row, reason) in reasons.iter().enumerate() {
        if let Some(reason) = reason {
            report.suppress(SuppressedCell {
                aggregate: step.id,
                breakdown: breakdowns[row].clone(),
                reason: *reason,
            });
        }
    }
    let keep: BooleanArray = reasons.iter().map(|r| Some(r.is_none())).collect();
    report.cells_released += keep.true_count() as u64;
    report.released_aggregates += 1;

    let kept = filter_record_batch(&cells, &keep).map_err(execution)?;
    let mut columns: Vec<ArrayRef> = kept.columns()[..layout.output_columns].to_vec();
    if let Some(base) = role.rounding.filter(|b| *b > 1) {
        for (position, kind) in layout.measures.iter().enumerate() {
            if kind.is_additive() {
                let index = layout.group_columns + position;
                columns[index] = round_column(&columns[index], base)?;
            }
        }
    }
    let released =
        RecordBatch::try_new(Arc::clone(step.released.schema_ref()), columns).map_err(execution)?;
    step.released.set(vec![released])?;
    Ok(secondary_time)
}
