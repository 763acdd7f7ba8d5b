//! The release step: from the computed cells of the released aggregates to
//! the cells that may leave, and the report of what was suppressed and why.
//!
//! It runs on the coordinator, on the final cells, before anything the user
//! wrote above an aggregate sees them, in this order:
//!
//! 1. primary suppression of cells: cells of fewer than `min_persons`
//!    persons (rule 2), and cells of a sensitive sum dominated by their
//!    largest persons, by the (n, k) rule or the p% rule (rule 6);
//! 2. primary suppression of values: in a released cell, a value computed
//!    from fewer than `min_persons` contributing persons is NULL (rule 2,
//!    read per value);
//! 3. secondary suppression, for tables with margins (rule 7): the cells of
//!    one aggregate's grouping sets, and the cells of several aggregates of
//!    the query over the same rows ([`crate::rules::margins::MarginShape`]),
//!    protected together;
//! 4. rounding of every released value, if the role asks for it, after
//!    suppression and never before, so that rounding cannot release a cell.
//!
//! What the client learns ([`ReleaseReport::metadata`]) never tells a cell
//! of 0 persons from one of 1 to `min_persons - 1`: suppressed cells are
//! not counted there. The report's own fields keep the full detail, for the
//! audit log that only the operator reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt64Array,
    new_null_array,
};
use datafusion::arrow::compute::{
    SortColumn, cast, concat_batches, filter_record_batch, lexsort_to_indices, nullif, take,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::scalar::ScalarValue;
use serde::Serialize;
use seuil_policies::{Policy, Role};

use crate::cells::CellsLayout;
use crate::error::EngineError;
use crate::rules::margins::{MarginTable, secondary_suppression};
use crate::rules::min_persons::ReleaseStep;

/// Why a cell or a value was not released.
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
    /// The reason's name in reports.
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

/// What one query released. The fields are the full detail, for the audit
/// log; [`ReleaseReport::metadata`] is what the client may see.
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
    /// Smallest number of distinct persons per released cell and value.
    pub min_persons: u32,
    /// Rounding base of released values, if any.
    pub rounding: Option<u32>,
    /// Number of released aggregates in the query.
    pub released_aggregates: usize,
    /// Cells released, over all released aggregates.
    pub cells_released: u64,
    /// Cells suppressed, over all released aggregates (audit only).
    pub cells_suppressed: u64,
    /// Suppressed cells by reason (audit only).
    pub suppressed_by_reason: BTreeMap<SuppressionReason, u64>,
    /// Each suppressed cell's reason (audit only).
    pub suppressed_cells: Vec<SuppressedCell>,
    /// Values of released cells set to NULL for having too few
    /// contributing persons.
    pub values_suppressed: u64,
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
            values_suppressed: 0,
        }
    }

    /// The keys known before the query runs: policy, role, mode, threshold,
    /// and what the rules withhold.
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
        metadata.insert("seuil.suppression".into(), self.withheld());
        metadata
    }

    /// What the release rules withhold, in words: the same for every
    /// query of the role, whatever the data.
    pub fn withheld(&self) -> String {
        let k = self.min_persons;
        format!(
            "cells of fewer than {k} persons, cells dominated by their largest persons, and cells that protect them in tables with margins are left out; values computed from fewer than {k} persons are NULL; how many were withheld is kept in the audit log only"
        )
    }

    /// The report as the client sees it, as Arrow schema metadata under
    /// `seuil.*` keys: the static keys, how many aggregates and cells were
    /// released. Nothing counts suppressed cells or values: those counts
    /// would tell a cell of 0 persons from one of a few.
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
        metadata
    }

    fn suppress(&mut self, cell: SuppressedCell) {
        *self.suppressed_by_reason.entry(cell.reason).or_default() += 1;
        self.cells_suppressed += 1;
        self.suppressed_cells.push(cell);
    }
}

fn execution(message: impl std::fmt::Display) -> EngineError {
    EngineError::internal(format!("release step: {message}"))
}

fn as_f64(column: &ArrayRef) -> Result<Float64Array, EngineError> {
    let converted = cast(column, &DataType::Float64).map_err(execution)?;
    converted
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| execution("a measure is not numeric"))
}

fn as_i64(column: &ArrayRef) -> Result<Int64Array, EngineError> {
    let converted = cast(column, &DataType::Int64).map_err(execution)?;
    converted
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| execution("a count is not an integer"))
}

/// A flag that stops long release work (the attacker's linear programs)
/// when the query is cancelled or times out.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Cancels its [`Cancellation`] when dropped: held by a query's future, so
/// that the release work of a query dropped midway (timeout, client gone)
/// stops too.
#[derive(Debug)]
pub struct CancelOnDrop(pub Cancellation);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The computed cells of one released aggregate and what the release rules
/// decided about them.
#[derive(Debug)]
pub struct ComputedCells {
    cells: RecordBatch,
    /// Why each cell is suppressed, if it is.
    reasons: Vec<Option<SuppressionReason>>,
    /// Per value (in order), per cell: suppressed for too few contributors.
    hidden_values: Vec<Vec<bool>>,
}

/// Reads the computed cells of `step` and applies the primary rules to
/// them: cells and values of too few persons, dominated cells.
pub fn primary(
    step: &ReleaseStep,
    batches: Vec<RecordBatch>,
    role: &Role,
) -> Result<ComputedCells, EngineError> {
    let layout = &step.layout;
    let schema: SchemaRef = match batches.first() {
        Some(batch) => batch.schema(),
        None => Arc::new(step.cells.schema().as_arrow().clone()),
    };
    let mut cells = concat_batches(&schema, &batches).map_err(execution)?;
    if layout.group_columns > 0 && cells.num_rows() > 1 {
        // Secondary suppression breaks ties by position: give it the cells
        // in one order, whatever order the parallel aggregation made.
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
    let reasons = primary_cells(&cells, layout, role)?;
    let k = i64::from(role.min_persons);
    let mut hidden_values = Vec::with_capacity(layout.measures.len());
    for measure in &layout.measures {
        let hidden = match measure.contributors {
            None => vec![false; cells.num_rows()],
            Some(column) => {
                let contributors = as_i64(cells.column(column))?;
                (0..cells.num_rows())
                    .map(|row| contributors.is_null(row) || contributors.value(row) < k)
                    .collect()
            }
        };
        hidden_values.push(hidden);
    }
    Ok(ComputedCells {
        cells,
        reasons,
        hidden_values,
    })
}

/// The primary suppression of each cell, if any.
fn primary_cells(
    cells: &RecordBatch,
    layout: &CellsLayout,
    role: &Role,
) -> Result<Vec<Option<SuppressionReason>>, EngineError> {
    let rows = cells.num_rows();
    let persons = as_i64(cells.column(layout.persons))?;
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
        let contributors = match layout.measures[dominance.measure].contributors {
            Some(column) => Some(as_i64(cells.column(column))?),
            None => None,
        };
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
            // A sum of too few contributors is suppressed as a value; the
            // dominance rules judge the sums that may be released.
            if contributors
                .as_ref()
                .is_some_and(|c| c.is_null(row) || c.value(row) < i64::from(role.min_persons))
            {
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

/// Where each computed cell of a group of aggregates sits in their joint
/// table with margins.
struct JointTable {
    table: MarginTable,
    dimensions: usize,
    /// Per aggregate, per row: the cell of the joint table.
    cell_of: Vec<Vec<usize>>,
    /// Per joint cell: the group columns it is broken down by.
    breakdowns: Vec<Vec<String>>,
}

/// Builds the joint table of `steps` (one aggregate with grouping sets, or
/// several over the same rows). Cells that two aggregates both release are
/// one cell of the table.
fn joint_table(
    steps: &[&ReleaseStep],
    computed: &[ComputedCells],
) -> Result<JointTable, EngineError> {
    let mut dimension_names: Vec<String> = Vec::new();
    let mut display_names: Vec<String> = Vec::new();
    let mut measure_names: Vec<String> = Vec::new();
    for step in steps {
        for (dimension, display) in step.margins.dimensions.iter().zip(&step.margins.display) {
            if !dimension_names.contains(dimension) {
                dimension_names.push(dimension.clone());
                display_names.push(display.clone());
            }
        }
        for measure in step.margins.measures.iter().flatten() {
            if !measure_names.contains(measure) {
                measure_names.push(measure.clone());
            }
        }
    }
    let dimensions = dimension_names.len();
    if dimensions > crate::rules::margins::MAX_GROUPING_DIMENSIONS {
        return Err(EngineError::Limit(format!(
            "a table with margins of {dimensions} dimensions cannot be protected; at most {} are allowed",
            crate::rules::margins::MAX_GROUPING_DIMENSIONS
        )));
    }
    let rows: usize = computed.iter().map(|c| c.cells.num_rows()).sum();
    if rows > crate::rules::margins::MAX_MARGIN_CELLS {
        return Err(EngineError::Limit(format!(
            "a table with margins of more than {} cells cannot be protected; group by fewer or coarser columns, or drop the totals",
            crate::rules::margins::MAX_MARGIN_CELLS
        )));
    }
    let mut index: HashMap<(u64, Vec<ScalarValue>), usize> = HashMap::new();
    let mut table = MarginTable {
        keys: Vec::new(),
        masks: Vec::new(),
        measures: vec![Vec::new(); measure_names.len()],
        non_negative: vec![true; measure_names.len()],
    };
    let mut cell_of = Vec::with_capacity(steps.len());
    let mut breakdowns = Vec::new();
    for (step, computed) in steps.iter().zip(computed) {
        let cells = &computed.cells;
        let own: Vec<usize> = step
            .margins
            .dimensions
            .iter()
            .map(|d| {
                dimension_names
                    .iter()
                    .position(|n| n == d)
                    .ok_or_else(|| execution("a dimension is missing from its table"))
            })
            .collect::<Result<_, _>>()?;
        let own_masks: Vec<u64> = match step.layout.grouping {
            Some((own_dimensions, gid_column)) => {
                let gid = cast(cells.column(gid_column), &DataType::UInt64).map_err(execution)?;
                let gid = gid
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .ok_or_else(|| execution("grouping ids are not integers"))?;
                let mask = (1u64 << own_dimensions) - 1;
                (0..cells.num_rows())
                    .map(|row| gid.value(row) & mask)
                    .collect()
            }
            None => vec![0; cells.num_rows()],
        };
        let values: Vec<Option<(usize, Float64Array)>> = step
            .margins
            .measures
            .iter()
            .enumerate()
            .map(|(position, name)| match name {
                Some(name) => {
                    let column = as_f64(cells.column(step.layout.group_columns + position))?;
                    let joint = measure_names
                        .iter()
                        .position(|n| n == name)
                        .ok_or_else(|| execution("a measure is missing from its table"))?;
                    Ok(Some((joint, column)))
                }
                None => Ok(None),
            })
            .collect::<Result<_, EngineError>>()?;
        let own_count = own.len();
        let mut rows = Vec::with_capacity(cells.num_rows());
        for (row, own_mask) in own_masks.iter().enumerate() {
            // The joint mask: every dimension the aggregate does not group
            // by is aggregated over.
            let mut mask = (1u64 << dimensions) - 1;
            let mut key = vec![ScalarValue::Null; dimensions];
            for (i, &joint) in own.iter().enumerate() {
                let bit_of_own = 1u64 << (own_count - 1 - i);
                if own_mask & bit_of_own == 0 {
                    mask &= !(1u64 << (dimensions - 1 - joint));
                    key[joint] =
                        ScalarValue::try_from_array(cells.column(i), row).map_err(execution)?;
                }
            }
            let cell = match index.get(&(mask, key.clone())) {
                Some(&cell) => cell,
                None => {
                    let cell = table.keys.len();
                    index.insert((mask, key.clone()), cell);
                    table.keys.push(key);
                    table.masks.push(mask);
                    for measure in &mut table.measures {
                        measure.push(None);
                    }
                    breakdowns.push(
                        (0..dimensions)
                            .filter(|d| mask & (1 << (dimensions - 1 - d)) == 0)
                            .map(|d| display_names[d].clone())
                            .collect(),
                    );
                    cell
                }
            };
            for (joint, column) in values.iter().flatten() {
                let value = if column.is_null(row) {
                    0.0
                } else {
                    column.value(row)
                };
                if value < 0.0 {
                    table.non_negative[*joint] = false;
                }
                table.measures[*joint][cell] = Some(value);
            }
            rows.push(cell);
        }
        cell_of.push(rows);
    }
    Ok(JointTable {
        table,
        dimensions,
        cell_of,
        breakdowns,
    })
}

/// Secondary suppression over a group of aggregates with margins: hides, in
/// `computed`, the cells an attacker would need to pin a suppressed one.
/// Returns the time it took.
fn protect_margins(
    steps: &[&ReleaseStep],
    computed: &mut [ComputedCells],
    role: &Role,
    cancellation: &Cancellation,
) -> Result<Vec<Vec<Option<Vec<String>>>>, EngineError> {
    let joint = joint_table(steps, computed)?;
    let cells = joint.table.keys.len();
    let mut primary_cells = vec![false; cells];
    let mut primary_values = vec![vec![false; cells]; joint.table.measures.len()];
    let measure_names: Vec<String> = {
        let mut names: Vec<String> = Vec::new();
        for step in steps {
            for name in step.margins.measures.iter().flatten() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    };
    for ((step, computed), rows) in steps.iter().zip(computed.iter()).zip(&joint.cell_of) {
        for (row, &cell) in rows.iter().enumerate() {
            if computed.reasons[row].is_some() {
                primary_cells[cell] = true;
            }
            for (position, name) in step.margins.measures.iter().enumerate() {
                if let Some(name) = name
                    && computed.hidden_values[position][row]
                    && let Some(joint_measure) = measure_names.iter().position(|n| n == name)
                {
                    primary_values[joint_measure][cell] = true;
                }
            }
        }
    }
    let secondary = secondary_suppression(
        &joint.table,
        joint.dimensions,
        &primary_cells,
        &primary_values,
        role.protection_percent,
        cancellation,
    )
    .ok_or_else(|| EngineError::Limit("the query was cancelled".into()))?;
    let mut hidden = vec![false; cells];
    for cell in secondary {
        hidden[cell] = true;
    }
    let mut breakdowns = Vec::with_capacity(steps.len());
    for (computed, rows) in computed.iter_mut().zip(&joint.cell_of) {
        let mut step_breakdowns = Vec::with_capacity(rows.len());
        for (row, &cell) in rows.iter().enumerate() {
            if hidden[cell] && computed.reasons[row].is_none() {
                computed.reasons[row] = Some(SuppressionReason::Secondary);
            }
            step_breakdowns.push(Some(joint.breakdowns[cell].clone()));
        }
        breakdowns.push(step_breakdowns);
    }
    Ok(breakdowns)
}

/// The groups in which the released aggregates of a query are released, in
/// the order their last member is computed: aggregates over the same rows
/// (same [`crate::rules::margins::MarginShape::family`]) form one group,
/// whose margins are protected together; every other aggregate is a group
/// of its own. Refuses a query where an aggregate of a group reads the
/// released cells of an earlier member (that member could not wait for the
/// group).
pub fn release_groups(steps: &[ReleaseStep]) -> Result<Vec<Vec<usize>>, EngineError> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| steps[g[0]].margins.family == step.margins.family)
        {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    for group in groups.iter().filter(|g| g.len() > 1) {
        let (first, last) = (group[0], group[group.len() - 1]);
        for (reader, step) in steps.iter().enumerate().take(last).skip(first + 1) {
            if group
                .iter()
                .any(|&member| member < reader && reads_cells_of(&step.cells, &steps[member]))
            {
                return Err(EngineError::refused(
                    crate::error::Rule::Margins,
                    "aggregates of this query over the same rows are protected together as one table with margins, and one of them is also read by another aggregate before the table is complete",
                    "split the query: release the table in one query and aggregate over it in another",
                ));
            }
        }
    }
    Ok(groups)
}

fn reads_cells_of(plan: &datafusion::logical_expr::LogicalPlan, step: &ReleaseStep) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let name = step.table_name();
    let mut found = false;
    let _ = plan.apply(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node
            && scan.table_name.table() == name
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Rounds a released value to the nearest multiple of `base`.
fn round_column(column: &ArrayRef, base: u32) -> Result<ArrayRef, EngineError> {
    let base = f64::from(base);
    let values = as_f64(column)?;
    let rounded: Float64Array = values
        .iter()
        .map(|v| v.map(|v| (v / base).round() * base))
        .collect();
    cast(&(Arc::new(rounded) as ArrayRef), column.data_type()).map_err(execution)
}

/// Releases the computed cells of a group of aggregates: one aggregate, or
/// several of the query over the same rows (whose margins are protected
/// together). Stores the released cells where the rest of the plan reads
/// them, and returns the time spent in secondary suppression.
pub fn release(
    steps: &[&ReleaseStep],
    mut computed: Vec<ComputedCells>,
    role: &Role,
    report: &mut ReleaseReport,
    cancellation: &Cancellation,
) -> Result<Duration, EngineError> {
    let started = Instant::now();
    let with_margins = steps.len() > 1 || steps.iter().any(|s| s.layout.grouping.is_some());
    let breakdowns = if with_margins {
        protect_margins(steps, &mut computed, role, cancellation)?
    } else {
        computed
            .iter()
            .map(|c| vec![None; c.cells.num_rows()])
            .collect()
    };
    let secondary_time = if with_margins {
        started.elapsed()
    } else {
        Duration::ZERO
    };
    for ((step, computed), breakdowns) in steps.iter().zip(computed).zip(breakdowns) {
        finish(step, computed, &breakdowns, role, report)?;
    }
    Ok(secondary_time)
}

/// Keeps the released cells of one aggregate, NULLs its suppressed values,
/// rounds, reports, and stores them.
fn finish(
    step: &ReleaseStep,
    computed: ComputedCells,
    breakdowns: &[Option<Vec<String>>],
    role: &Role,
    report: &mut ReleaseReport,
) -> Result<(), EngineError> {
    let layout = &step.layout;
    for (row, reason) in computed.reasons.iter().enumerate() {
        if let Some(reason) = reason {
            report.suppress(SuppressedCell {
                aggregate: step.id,
                breakdown: breakdowns.get(row).cloned().flatten(),
                reason: *reason,
            });
        }
    }
    let keep: BooleanArray = computed.reasons.iter().map(|r| Some(r.is_none())).collect();
    report.cells_released += keep.true_count() as u64;
    report.released_aggregates += 1;

    let kept = filter_record_batch(&computed.cells, &keep).map_err(execution)?;
    let mut columns: Vec<ArrayRef> = kept.columns()[..layout.output_columns].to_vec();
    for (position, hidden) in computed.hidden_values.iter().enumerate() {
        let hidden: BooleanArray = hidden
            .iter()
            .zip(&computed.reasons)
            .filter(|(_, reason)| reason.is_none())
            .map(|(h, _)| Some(*h))
            .collect();
        let count = hidden.true_count();
        if count == 0 {
            continue;
        }
        report.values_suppressed += count as u64;
        let index = layout.group_columns + position;
        columns[index] = if count == hidden.len() {
            new_null_array(columns[index].data_type(), hidden.len())
        } else {
            nullif(&columns[index], &hidden).map_err(execution)?
        };
    }
    if let Some(base) = role.rounding.filter(|b| *b > 1) {
        for (position, measure) in layout.measures.iter().enumerate() {
            let index = layout.group_columns + position;
            if measure.rounded && columns[index].data_type().is_numeric() {
                columns[index] = round_column(&columns[index], base)?;
            }
        }
    }
    let released =
        RecordBatch::try_new(Arc::clone(step.released.schema_ref()), columns).map_err(execution)?;
    step.released.set(vec![released])
}
