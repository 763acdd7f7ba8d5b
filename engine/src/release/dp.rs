//! dp mode's release mechanism (DESIGN.md §2, "dp"): rules 2, 6 and 7 met
//! by differential privacy instead of decisions on exact data.
//!
//! The cells plan bounds each person's contribution
//! ([`crate::cells::Bounding`]): a person counts in at most
//! `max_groups_per_person` cells of an aggregate, with at most
//! `max_rows_per_cell` rows in each, and with a sum clamped to the column's
//! bounds. From those bounds and the policy alone, before any data is read,
//! [`Dp::cost`] fixes every parameter: the query's ε (the role's
//! `epsilon_per_query`), split evenly over its noisy releases, and all of
//! its δ to partition selection; each mechanism's scale and the selection's
//! threshold. The engine charges that cost to the ledger; then the cells are
//! computed and [`Dp::release`] draws the noise, with the `opendp` crate's
//! exact discrete mechanisms and its secure random source:
//!
//! - partition selection ([`make_laplace_threshold`]) on each cell's person
//!   count less `min_persons - 1`; cells at or under it are not offered at
//!   all, which is the same as a count of zero. The threshold is the
//!   smallest whose δ, from the measurement's own privacy map, is within
//!   the role's δ. `COUNT(DISTINCT person)` releases the selection's noisy
//!   count;
//! - [`make_laplace`] for every other value, on integers: counts, and sums
//!   in units of a grid of 2⁻¹⁰ (each person's clamped contribution is
//!   rounded to it in the cells plan, so that a sum is an exact integer of
//!   units and its noise exact too), with the scale the L1 sensitivity over
//!   ε: one person moves `max_groups_per_person` cells, each by at most its
//!   bound. An average is a noisy sum over a noisy count, clamped to the
//!   bounds.
//!
//! Nothing computed from exact data leaves: no dominance, no secondary
//! suppression, and no count of the cells that were not selected, neither
//! in the metadata nor in the audit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, UInt64Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::DataType;
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{make_laplace, make_laplace_threshold};
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L0PInfDistance, L1Distance};
use seuil_policies::{DpSettings, Role};

use super::mechanism::ReleaseMechanism;
use super::report::{DpRelease, NoisyField, ReleaseReport, Selection};
use crate::cancellation::Cancellation;
use crate::cells::{Bounding, CellsNeeds, NoisyValue, ReleaseStep};
use crate::error::EngineError;
use crate::options::{ContributionKey, DpMutation};

/// The grid of sums, as a power of two: amounts are counted, and their noise
/// drawn, in multiples of 2⁻¹⁰, which keeps sampling fast and exact.
const SUM_GRID_POWER: i32 = -10;

/// Confidence level of the reported intervals.
const CI_ALPHA: f64 = 0.05;

/// The dp release mechanism of a role.
#[derive(Debug)]
pub struct Dp {
    role: Role,
    settings: DpSettings,
    key: ContributionKey,
    mutation: DpMutation,
}

/// A measurement that cannot be built or mapped: its message holds the
/// parameters, which come from the policy and the query only.
fn parameter_error(error: opendp::error::Error) -> EngineError {
    EngineError::internal(format!(
        "dp noise parameters: {:?} {}",
        error.variant,
        error.message.unwrap_or_default()
    ))
}

/// A measurement that failed on data: its kind only, since a message could
/// name an input.
fn noise_error(error: opendp::error::Error) -> EngineError {
    EngineError::internal(format!("dp noise: {:?}", error.variant))
}

impl Dp {
    /// The mechanism of `role`, which must be in dp mode, choosing persons'
    /// cells under `key` (`mutation` weakens it, for mutation tests only).
    pub fn new(
        role: Role,
        key: ContributionKey,
        mutation: DpMutation,
    ) -> Result<Self, EngineError> {
        let settings = role.dp.ok_or_else(|| {
            EngineError::Setup(format!(
                "role {} is in dp mode without dp settings",
                role.name
            ))
        })?;
        Ok(Self {
            role,
            settings,
            key,
            mutation,
        })
    }
}

/// The smallest scale from `scale` up whose ε, by the measurement's own
/// privacy `map`, is within `epsilon`: the derived scale, unless floating
/// point puts its ε a hair above.
fn calibrated(
    mut scale: f64,
    epsilon: f64,
    map: impl Fn(f64) -> Result<f64, EngineError>,
) -> Result<f64, EngineError> {
    for _ in 0..64 {
        let spent = map(scale)?;
        if spent <= epsilon {
            return Ok(scale);
        }
        scale *= (spent / epsilon).max(1.0 + 1e-12);
    }
    Err(EngineError::internal(
        "a noise scale could not be calibrated",
    ))
}

type SelectionMeasurement = opendp::core::Measurement<
    MapDomain<AtomDomain<u64>, AtomDomain<i64>>,
    L0PInfDistance<1, AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<u64, i64>,
>;

fn selection(scale: f64, threshold: i64) -> Result<SelectionMeasurement, EngineError> {
    make_laplace_threshold(
        MapDomain::new(AtomDomain::<u64>::default(), AtomDomain::<i64>::default()),
        L0PInfDistance::default(),
        scale,
        threshold,
        None,
    )
    .map_err(parameter_error)
}

/// How far one person moves the selection's input: a person adds one to
/// the count of at most `groups` cells.
fn selection_distance(groups: u32) -> (u32, i64, i64) {
    (groups, i64::from(groups), 1)
}

/// The selection of `groups`-bounded persons at `epsilon` and `delta`: its
/// scale, and the smallest threshold whose δ is within `delta`.
fn calibrate_selection(
    groups: u32,
    epsilon: f64,
    delta: f64,
) -> Result<(f64, i64, f64), EngineError> {
    let d_in = selection_distance(groups);
    // The (ε, δ) of the selection at `threshold`. δ is read from the map of
    // the selection at `threshold - 1`: a cell that one person brings in
    // (count 1, absent without them) is released when `1 + Z >= threshold`,
    // with probability `P(Z >= threshold - 1)`, and opendp 0.16's map bounds
    // it by `P(Z > threshold - 1)`, one step short (measured:
    // `a_one_person_cell_is_selected_as_often_as_delta_says` found such a
    // cell released `e^(1/scale)` times as often as that δ). The map at
    // `threshold - 1` gives `P(Z >= threshold - 1)`; ε does not depend on
    // the threshold.
    let privacy = |scale: f64, threshold: i64| -> Result<(f64, f64), EngineError> {
        let map = |t: i64| selection(scale, t)?.map(&d_in).map_err(parameter_error);
        Ok((map(threshold)?.0, map(threshold - 1)?.1))
    };
    let scale = calibrated(f64::from(groups) / epsilon, epsilon, |s| {
        Ok(privacy(s, i64::MAX / 4)?.0)
    })?;
    // δ falls as the threshold rises: double until within, then bisect.
    // The map needs a threshold of at least the L∞ distance.
    let lowest = d_in.2 + 1;
    let mut high: i64 = lowest;
    while privacy(scale, high)?.1 > delta {
        if high > i64::MAX / 8 {
            return Err(EngineError::internal("no selection threshold meets delta"));
        }
        high *= 2;
    }
    let mut low = (high / 2).max(lowest - 1);
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if privacy(scale, middle)?.1 <= delta {
            high = middle;
        } else {
            low = middle;
        }
    }
    let (_, spent) = privacy(scale, high)?;
    Ok((scale, high, spent))
}

/// Discrete Laplace noise on a vector of integers.
type IntegerNoise = opendp::core::Measurement<
    VectorDomain<AtomDomain<i64>>,
    L1Distance<i64>,
    MaxDivergence,
    Vec<i64>,
>;

fn count_noise(scale: f64) -> Result<IntegerNoise, EngineError> {
    make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        scale,
        None,
    )
    .map_err(parameter_error)
}

/// The calibrated scale of integers moved by at most `l1` over all cells.
fn count_scale(l1: i64, epsilon: f64) -> Result<f64, EngineError> {
    calibrated(l1 as f64 / epsilon, epsilon, |s| {
        count_noise(s)?.map(&l1).map_err(parameter_error)
    })
}

/// One unit of the grid of sums, in the sums' own unit.
fn sum_grid() -> f64 {
    2f64.powi(SUM_GRID_POWER)
}

/// The most one person adds to a cell's sum, in grid units, for a clamp to
/// `bounds` (rounded to the grid as the cells plan rounds).
fn sum_units_bound((lower, upper): (f64, f64)) -> i64 {
    let units = |v: f64| (v / sum_grid()).round().abs();
    units(lower).max(units(upper)) as i64
}

/// The calibrated scale of sums clamped to `bounds` in at most `groups`
/// cells per person, in the sums' own unit.
fn sum_scale(groups: u32, bounds: (f64, f64), epsilon: f64) -> Result<f64, EngineError> {
    let l1 = i64::from(groups).saturating_mul(sum_units_bound(bounds));
    Ok(count_scale(l1, epsilon)? * sum_grid())
}

/// Half-width of the 95% interval of discrete Laplace noise of `scale` on
/// a grid of `grid` (1 for integers), rounded up to a whole number: a wider
/// interval covers at least as often.
fn ci95(scale: f64, grid: f64) -> Option<f64> {
    opendp::accuracy::discrete_laplacian_scale_to_accuracy(scale / grid, CI_ALPHA)
        .ok()
        .map(|accuracy| (accuracy.floor() * grid).ceil())
}

impl ReleaseMechanism for Dp {
    fn cells_needs(&self) -> CellsNeeds {
        CellsNeeds {
            persons_up_to: self.role.min_persons,
            largest: 0,
            bounding: Some(Bounding {
                max_groups_per_person: match self.mutation {
                    DpMutation::LiftGroupBound => u32::MAX,
                    _ => self.settings.max_groups_per_person,
                },
                max_rows_per_cell: self.settings.max_rows_per_cell,
                key: self.key.clone(),
                sum_grid_power: SUM_GRID_POWER,
            }),
        }
    }

    fn cost(&self, steps: &[ReleaseStep]) -> Result<Option<DpRelease>, EngineError> {
        if steps.is_empty() {
            return Ok(None);
        }
        let settings = &self.settings;
        let groups = settings.max_groups_per_person;
        let releases: usize = steps
            .iter()
            .map(|s| {
                1 + s
                    .layout
                    .noisy
                    .iter()
                    .map(NoisyValue::releases)
                    .sum::<usize>()
            })
            .sum();
        let epsilon = settings.epsilon_per_query;
        let epsilon_per_release = epsilon / releases as f64;
        let delta_per_selection = settings.delta / steps.len() as f64;
        let (selection_scale, threshold, selection_delta) =
            calibrate_selection(groups, epsilon_per_release, delta_per_selection)?;
        let mut selections = Vec::new();
        let mut values = Vec::new();
        let grid = sum_grid();
        for step in steps {
            selections.push(Selection {
                aggregate: step.id,
                pre_threshold: self.role.min_persons.saturating_sub(1),
                scale: selection_scale,
                threshold,
                delta: selection_delta,
            });
            let schema = step.cells.schema();
            for (i, noisy) in step.layout.noisy.iter().enumerate() {
                let name = schema
                    .field(step.layout.group_columns + i)
                    .name()
                    .to_string();
                let rows_l1 = |per_person: u32| i64::from(groups) * i64::from(per_person);
                // (mechanism, scale, the count's scale of an average, grid,
                // 95% half-width).
                let (mechanism, scale, count_scale, grid, ci95) = match noisy {
                    NoisyValue::Persons => (
                        "laplace_threshold",
                        selection_scale,
                        None,
                        None,
                        ci95(selection_scale, 1.0),
                    ),
                    NoisyValue::Rows { per_person, .. } => {
                        let scale = count_scale(rows_l1(*per_person), epsilon_per_release)?;
                        ("laplace", scale, None, None, ci95(scale, 1.0))
                    }
                    NoisyValue::Sum { bounds, .. } => {
                        let scale = sum_scale(groups, *bounds, epsilon_per_release)?;
                        ("laplace", scale, None, Some(grid), ci95(scale, grid))
                    }
                    // A ratio of two noisy numbers has no interval of its
                    // own here.
                    NoisyValue::Avg {
                        bounds, per_person, ..
                    } => (
                        "laplace_ratio",
                        sum_scale(groups, *bounds, epsilon_per_release)?,
                        Some(count_scale(rows_l1(*per_person), epsilon_per_release)?),
                        Some(grid),
                        None,
                    ),
                };
                let field = NoisyField {
                    aggregate: step.id,
                    value: i,
                    name,
                    mechanism: mechanism.into(),
                    scale,
                    count_scale,
                    grid,
                    ci95,
                };
                values.push(field);
            }
        }
        Ok(Some(DpRelease {
            epsilon,
            delta: settings.delta,
            releases,
            epsilon_per_release,
            max_groups_per_person: groups,
            max_rows_per_cell: settings.max_rows_per_cell,
            selections,
            values,
            charge: None,
        }))
    }

    fn release(
        &self,
        steps: &[&ReleaseStep],
        computed: Vec<Vec<RecordBatch>>,
        report: &mut ReleaseReport,
        cancellation: &Cancellation,
    ) -> Result<Duration, EngineError> {
        let Some(dp) = report.dp.clone() else {
            return Err(EngineError::internal(
                "a dp release without its cost fixed beforehand",
            ));
        };
        if dp.charge.is_none() {
            return Err(EngineError::internal("a dp release before its charge"));
        }
        let drawn = match self.mutation {
            DpMutation::HalveNoise => 0.5,
            _ => 1.0,
        };
        for (step, batches) in steps.iter().zip(computed) {
            if cancellation.is_cancelled() {
                return Err(EngineError::internal("the dp release was cancelled"));
            }
            release_step(step, batches, &dp, drawn, report)?;
        }
        Ok(Duration::ZERO)
    }
}

fn execution(error: impl std::fmt::Display) -> EngineError {
    EngineError::internal(format!("dp release: {error}"))
}

fn int64_values(column: &ArrayRef) -> Result<Vec<i64>, EngineError> {
    let column = cast(column, &DataType::Int64).map_err(execution)?;
    let column = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| execution("a count column is not Int64"))?;
    // A cell without a contributing row has no sum: it counts as zero.
    Ok(column.iter().map(|v| v.unwrap_or(0)).collect())
}

/// The cells that partition selection releases, by row, with their noisy
/// person counts less the pre-threshold, in row order. Cells at or under
/// the pre-threshold are not offered: to the mechanism, a count of zero
/// (the threshold mechanism is as private on the shifted counts, which one
/// person still moves by at most one in each of its cells).
fn select(persons: &[i64], params: &Selection, drawn: f64) -> Result<Vec<(u64, i64)>, EngineError> {
    let pre_threshold = i64::from(params.pre_threshold);
    let offered: HashMap<u64, i64> = persons
        .iter()
        .enumerate()
        .filter_map(|(row, n)| {
            let shifted = n - pre_threshold;
            (shifted > 0).then_some((row as u64, shifted))
        })
        .collect();
    let selected = selection(params.scale * drawn, params.threshold)?
        .invoke(&offered)
        .map_err(noise_error)?;
    let mut rows: Vec<(u64, i64)> = selected.into_iter().collect();
    rows.sort_unstable_by_key(|(row, _)| *row);
    Ok(rows)
}

/// Noisy sums in the sums' unit, from exact sums in grid units and the
/// noise scale in the sums' unit.
fn noisy_sums(units: &[i64], scale: f64) -> Result<Vec<f64>, EngineError> {
    let grid = sum_grid();
    Ok(count_noise(scale / grid)?
        .invoke(&units.to_vec())
        .map_err(noise_error)?
        .into_iter()
        .map(|v| v as f64 * grid)
        .collect())
}

/// A noisy column in the user's type: integers are rounded, not truncated.
fn in_type(values: Vec<f64>, data_type: &DataType) -> Result<ArrayRef, EngineError> {
    let integer = data_type.is_integer();
    let array: ArrayRef = Arc::new(Float64Array::from(
        values
            .into_iter()
            .map(|v| if integer { v.round() } else { v })
            .collect::<Vec<_>>(),
    ));
    cast(&array, data_type).map_err(execution)
}

/// Releases one aggregate's cells: `drawn` is the share of each reported
/// scale the noise is drawn at (1, but for mutation tests).
fn release_step(
    step: &ReleaseStep,
    batches: Vec<RecordBatch>,
    dp: &DpRelease,
    drawn: f64,
    report: &mut ReleaseReport,
) -> Result<(), EngineError> {
    let layout = &step.layout;
    let schema = Arc::new(step.cells.schema().as_arrow().clone());
    let cells = concat_batches(&schema, &batches).map_err(execution)?;
    let selection_params = dp
        .selections
        .iter()
        .find(|s| s.aggregate == step.id)
        .ok_or_else(|| EngineError::internal("a released aggregate without its selection"))?;
    let persons = int64_values(cells.column(layout.persons))?;
    let pre_threshold = i64::from(selection_params.pre_threshold);
    let rows = select(&persons, selection_params, drawn)?;
    let indices = UInt64Array::from(rows.iter().map(|(row, _)| *row).collect::<Vec<_>>());
    let noisy_persons: Vec<f64> = rows
        .iter()
        .map(|(_, count)| (count + pre_threshold) as f64)
        .collect();
    let taken = |column: usize| take(cells.column(column), &indices, None).map_err(execution);
    let mut columns: Vec<ArrayRef> = (0..layout.group_columns)
        .map(taken)
        .collect::<Result<_, _>>()?;
    for (i, noisy) in layout.noisy.iter().enumerate() {
        let field = dp
            .values
            .iter()
            .find(|v| v.aggregate == step.id && v.value == i)
            .ok_or_else(|| EngineError::internal("a noisy value without its parameters"))?;
        let data_type = schema.field(layout.group_columns + i).data_type().clone();
        let values: Vec<f64> = match noisy {
            NoisyValue::Persons => noisy_persons.clone(),
            NoisyValue::Rows { column, .. } => {
                let exact = int64_values(&taken(*column)?)?;
                count_noise(field.scale * drawn)?
                    .invoke(&exact)
                    .map_err(noise_error)?
                    .into_iter()
                    .map(|v| v as f64)
                    .collect()
            }
            NoisyValue::Sum { column, .. } => {
                noisy_sums(&int64_values(&taken(*column)?)?, field.scale * drawn)?
            }
            NoisyValue::Avg {
                sum,
                rows: count,
                bounds: (lower, upper),
                ..
            } => {
                let sums = noisy_sums(&int64_values(&taken(*sum)?)?, field.scale * drawn)?;
                let count_scale = field
                    .count_scale
                    .ok_or_else(|| EngineError::internal("an average without its count's scale"))?;
                let counts = count_noise(count_scale * drawn)?
                    .invoke(&int64_values(&taken(*count)?)?)
                    .map_err(noise_error)?;
                sums.into_iter()
                    .zip(counts)
                    .map(|(s, c)| (s / (c.max(1) as f64)).clamp(*lower, *upper))
                    .collect()
            }
        };
        columns.push(in_type(values, &data_type)?);
    }
    report.cells_released += indices.len() as u64;
    report.released_aggregates += 1;
    let released =
        RecordBatch::try_new(Arc::clone(step.released.schema_ref()), columns).map_err(execution)?;
    step.released.set(vec![released])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selection_threshold_is_the_smallest_within_delta() {
        let (scale, threshold, delta) = calibrate_selection(4, 0.5, 1e-7).unwrap();
        assert_eq!(scale, 8.0);
        assert!(delta <= 1e-7);
        // One less, and δ (read one threshold lower still) is over.
        let below = selection(scale, threshold - 2)
            .unwrap()
            .map(&selection_distance(4))
            .unwrap();
        assert!(below.1 > 1e-7, "threshold {threshold} is not the smallest");
    }

    #[test]
    fn scales_are_the_sensitivity_over_epsilon() {
        assert_eq!(count_scale(4, 0.5).unwrap(), 8.0);
        let scale = sum_scale(4, (0.0, 5000.0), 0.25).unwrap();
        assert_eq!(scale, 80_000.0);
    }

    fn selection_of(pre_threshold: u32, groups: u32, epsilon: f64, delta: f64) -> Selection {
        let (scale, threshold, delta) = calibrate_selection(groups, epsilon, delta).unwrap();
        Selection {
            aggregate: 0,
            pre_threshold,
            scale,
            threshold,
            delta,
        }
    }

    #[test]
    fn a_cell_under_min_persons_is_never_selected() {
        // min_persons 20, the demo's public role: a cell of 19 persons is
        // never offered, next to cells of every size above.
        let params = selection_of(19, 4, 0.5, 1e-7);
        let persons: Vec<i64> = vec![19, 0, 1, 5_000, 19, 400];
        for _ in 0..10_000 {
            let rows = select(&persons, &params, 1.0).unwrap();
            assert!(rows.iter().all(|(row, _)| ![0, 1, 2, 4].contains(row)));
        }
    }

    #[test]
    fn a_one_person_cell_is_selected_as_often_as_delta_says() {
        // A loosened δ, so that the frequency can be measured: a cell of one
        // person (no pre-threshold) is released with probability δ.
        let params = selection_of(0, 1, 1.0, 1e-2);
        // The true probability, P(Z >= threshold - 1) for the discrete
        // Laplace of the selection's scale, is within the reported δ.
        let q = (-1.0 / params.scale).exp();
        let exact = q.powi((params.threshold - 1) as i32) / (1.0 + q);
        assert!(
            exact <= params.delta * (1.0 + 1e-9),
            "{exact} over {}",
            params.delta
        );
        let runs = 20_000;
        let released = (0..runs)
            .filter(|_| !select(&[1], &params, 1.0).unwrap().is_empty())
            .count() as f64;
        let n = f64::from(runs);
        let band = 5.0 * (params.delta * (1.0 - params.delta) / n).sqrt();
        let frequency = released / n;
        assert!(
            (frequency - params.delta).abs() <= band,
            "released {frequency}, delta {}",
            params.delta
        );
    }

    #[test]
    fn intervals_cover_their_noise() {
        let ci = ci95(8.0, 1.0).unwrap();
        // P(|X| > t) for discrete Laplace of scale b: 2 e^{-(t+1)/b} / (1 + e^{-1/b}).
        let tail = 2.0 * (-(ci + 1.0) / 8.0).exp() / (1.0 + (-1.0f64 / 8.0).exp());
        assert!(tail <= 0.05, "{ci} {tail}");
    }
}
