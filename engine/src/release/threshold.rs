//! Threshold mode's release: primary suppression of cells and values
//! (rules 2 and 6), secondary suppression of tables with margins (rule 7),
//! and rounding, in that order.

use std::collections::HashMap;
use std::sync::Arc;
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
use seuil_policies::Role;

use crate::cancellation::Cancellation;
use crate::cells::CellsLayout;
use crate::cells::ReleaseStep;
use crate::error::EngineError;
use crate::rules::margins::{MarginTable, secondary_suppression};
use crate::rules::{magnitudes, min_persons};

use super::mechanism::ReleaseMechanism;
use super::report::{ReleaseReport, SuppressedCell, SuppressionReason};
use crate::cells::CellsNeeds;

/// Threshold mode: cells and values of fewer than `min_persons` persons and
/// dominated sums are suppressed, then what margins would give back, then
/// released values are rounded if the role asks for it.
#[derive(Debug, Clone)]
pub struct Threshold {
    role: Role,
}

impl Threshold {
    /// The mechanism for a threshold-mode role.
    pub fn new(role: Role) -> Self {
        Self { role }
    }
}

impl ReleaseMechanism for Threshold {
    fn cells_needs(&self) -> CellsNeeds {
        CellsNeeds {
            persons_up_to: self.role.min_persons,
            largest: dominance_depth(&self.role),
            bounding: None,
        }
    }

    fn release(
        &self,
        steps: &[&ReleaseStep],
        computed: Vec<Vec<RecordBatch>>,
        report: &mut ReleaseReport,
        cancellation: &Cancellation,
    ) -> Result<Duration, EngineError> {
        let primary = steps
            .iter()
            .zip(computed)
            .map(|(step, batches)| primary(step, batches, &self.role))
            .collect::<Result<Vec<_>, _>>()?;
        release(steps, primary, &self.role, report, cancellation)
    }
}

/// How many largest contributions the role's dominance rules look at.
fn dominance_depth(role: &Role) -> usize {
    let nk = role.dominance.map_or(0, |d| d.n as usize);
    let p = if role.p_percent.is_some() { 2 } else { 0 };
    nk.max(p)
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

/// The computed cells of one released aggregate and what the release rules
/// decided about them.
#[derive(Debug)]
struct ComputedCells {
    cells: RecordBatch,
    /// Why each cell is suppressed, if it is.
    reasons: Vec<Option<SuppressionReason>>,
    /// Per value (in order), per cell: suppressed for too few contributors.
    hidden_values: Vec<Vec<bool>>,
}

/// Reads the computed cells of `step` and applies the primary rules to
/// them: cells and values of too few persons, dominated cells.
fn primary(
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
    let mut hidden_values = Vec::with_capacity(layout.measures.len());
    for measure in &layout.measures {
        let hidden = match measure.contributors {
            None => vec![false; cells.num_rows()],
            Some(column) => {
                let contributors = as_i64(cells.column(column))?;
                (0..cells.num_rows())
                    .map(|row| {
                        let n = contributors.is_valid(row).then(|| contributors.value(row));
                        !min_persons::enough_persons(n, role)
                    })
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
            let n = persons.is_valid(row).then(|| persons.value(row));
            (!min_persons::enough_persons(n, role)).then_some(SuppressionReason::Persons)
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
            if contributors.as_ref().is_some_and(|c| {
                !min_persons::enough_persons(c.is_valid(row).then(|| c.value(row)), role)
            }) {
                continue;
            }
            let top: Vec<f64> = largest.iter().map(|a| value(a, row)).collect();
            if magnitudes::dominated(value(&total, row), &top, role) {
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
    let names = JointNames::of(steps);
    let dimensions = names.dimensions.len();
    check_joint_size(dimensions, computed)?;
    let mut index: HashMap<(u64, Vec<ScalarValue>), usize> = HashMap::new();
    let mut table = MarginTable {
        keys: Vec::new(),
        masks: Vec::new(),
        measures: vec![Vec::new(); names.measures.len()],
        non_negative: vec![true; names.measures.len()],
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
                names
                    .dimensions
                    .iter()
                    .position(|n| n == d)
                    .ok_or_else(|| execution("a dimension is missing from its table"))
            })
            .collect::<Result<_, _>>()?;
        let own_masks = own_masks(step, cells)?;
        let values = joint_values(step, cells, &names.measures)?;
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
                    breakdowns.push(names.breakdown(mask));
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

/// The dimensions (with the names reports show) and the measures of a
/// joint table, in the order the aggregates first name them.
struct JointNames {
    dimensions: Vec<String>,
    display: Vec<String>,
    measures: Vec<String>,
}

impl JointNames {
    fn of(steps: &[&ReleaseStep]) -> Self {
        let mut names = JointNames {
            dimensions: Vec::new(),
            display: Vec::new(),
            measures: Vec::new(),
        };
        for step in steps {
            for (dimension, display) in step.margins.dimensions.iter().zip(&step.margins.display) {
                if !names.dimensions.contains(dimension) {
                    names.dimensions.push(dimension.clone());
                    names.display.push(display.clone());
                }
            }
            for measure in step.margins.measures.iter().flatten() {
                if !names.measures.contains(measure) {
                    names.measures.push(measure.clone());
                }
            }
        }
        names
    }

    /// The dimensions a cell of joint mask `mask` is broken down by.
    fn breakdown(&self, mask: u64) -> Vec<String> {
        let dimensions = self.dimensions.len();
        (0..dimensions)
            .filter(|d| mask & (1 << (dimensions - 1 - d)) == 0)
            .map(|d| self.display[d].clone())
            .collect()
    }
}

/// Refuses a joint table too large to protect: its masks are 64-bit, and
/// the attacker's linear programs grow with its cells.
fn check_joint_size(dimensions: usize, computed: &[ComputedCells]) -> Result<(), EngineError> {
    if dimensions > crate::limits::MAX_GROUPING_DIMENSIONS {
        return Err(EngineError::Limit(format!(
            "a table with margins of {dimensions} dimensions cannot be protected; at most {} are allowed",
            crate::limits::MAX_GROUPING_DIMENSIONS
        )));
    }
    let rows: usize = computed.iter().map(|c| c.cells.num_rows()).sum();
    if rows > crate::limits::MAX_MARGIN_CELLS {
        return Err(EngineError::Limit(format!(
            "a table with margins of more than {} cells cannot be protected; group by fewer or coarser columns, or drop the totals",
            crate::limits::MAX_MARGIN_CELLS
        )));
    }
    Ok(())
}

/// Each cell's mask over its own aggregate's dimensions: a bit set for each
/// dimension the cell is aggregated over (none without grouping sets).
fn own_masks(step: &ReleaseStep, cells: &RecordBatch) -> Result<Vec<u64>, EngineError> {
    Ok(match step.layout.grouping {
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
    })
}

/// For each value of the aggregate that takes part in the joint table, its
/// position among the table's measures and its column.
fn joint_values(
    step: &ReleaseStep,
    cells: &RecordBatch,
    measure_names: &[String],
) -> Result<Vec<Option<(usize, Float64Array)>>, EngineError> {
    step.margins
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
        .collect()
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
fn release(
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
