//! The layout of a cells plan's output, as the release step reads it, and
//! what a release mechanism asks the cells plan to compute.

use datafusion::logical_expr::Expr;

use super::measures::{MeasureKind, Value};
use crate::options::ContributionKey;

/// What a release mechanism needs of each cell besides the user's values
/// ([`crate::release::ReleaseMechanism::cells_needs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellsNeeds {
    /// Distinct persons (of a cell, of a value's contributors) are counted
    /// up to this number: the release only asks whether there are that many.
    pub persons_up_to: u32,
    /// How many of the largest per-person contributions of each sensitive
    /// sum are computed (0 for none).
    pub largest: usize,
    /// Each person's contribution bounded before cells are formed (dp
    /// mode), with exact person counts; `None` for exact cells.
    pub bounding: Option<Bounding>,
}

/// How dp mode bounds each person's contribution to a released aggregate
/// ([`super::bounded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounding {
    /// Most cells a person counts in; beyond, the cells are chosen by a
    /// keyed hash of the person and the cell.
    pub max_groups_per_person: u32,
    /// Most rows of one person counted in one cell.
    pub max_rows_per_cell: u32,
    /// The key of that hash.
    pub key: ContributionKey,
    /// Sums are counted in units of `2^sum_grid_power`: each person's
    /// clamped contribution is rounded to that grid, so that a cell's sum is
    /// an exact integer of units and its noise an exact discrete one.
    pub sum_grid_power: i32,
}

/// What the noise of one released value of a bounded cells plan is added
/// to, and the most one person changes it in one cell (its sensitivity in
/// one cell; a person is in at most `max_groups_per_person` cells).
#[derive(Debug, Clone, PartialEq)]
pub enum NoisyValue {
    /// The cell's persons: the partition selection's own noisy count.
    Persons,
    /// A count of rows (or of persons, `per_person` 1) in column `column`
    /// (`Int64`), at most `per_person` from each person.
    Rows {
        /// Column of the bounded count.
        column: usize,
        /// Most one person adds.
        per_person: u32,
    },
    /// A sum of per-person contributions clamped to `bounds`, in column
    /// `column` (`Int64`, in units of the bounding's grid).
    Sum {
        /// Column of the bounded sum.
        column: usize,
        /// The clamp of each person's contribution.
        bounds: (f64, f64),
    },
    /// An average: a bounded sum over a bounded count of rows, each noisy,
    /// the ratio clamped to `bounds`.
    Avg {
        /// Column of the bounded sum (`Int64`, in units of the grid).
        sum: usize,
        /// Column of the bounded count (`Int64`).
        rows: usize,
        /// The clamp of each person's contribution to the sum.
        bounds: (f64, f64),
        /// Most rows one person adds to the count.
        per_person: u32,
    },
}

impl NoisyValue {
    /// How many noisy numbers the value needs besides the selection's.
    pub fn releases(&self) -> usize {
        match self {
            NoisyValue::Persons => 0,
            NoisyValue::Rows { .. } | NoisyValue::Sum { .. } => 1,
            NoisyValue::Avg { .. } => 2,
        }
    }
}

/// Where the dominance rules find one sensitive measure's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DominanceColumns {
    /// The measure's position among the aggregate's values.
    pub measure: usize,
    /// Column of the cell's total of per-person contributions.
    pub total: usize,
    /// Columns of the largest, second largest, ... contributions.
    pub largest: Vec<usize>,
}

/// One released value, as the release step reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasureLayout {
    /// How it combines across cells.
    pub kind: MeasureKind,
    /// Column of the number of persons who contribute to it, when not every
    /// person of the cell does.
    pub contributors: Option<usize>,
    /// True when a role that rounds rounds it: every value but
    /// `GROUPING(...)`, which names the cell's margin.
    pub rounded: bool,
}

/// The layouts of `values`: `contributor_of` gives, for each value, the
/// position of its contributors' column after the persons' column at
/// `persons`, if it has one.
pub(super) fn measure_layouts(
    values: &[Value],
    contributor_of: &[Option<usize>],
    persons: usize,
) -> Vec<MeasureLayout> {
    values
        .iter()
        .zip(contributor_of)
        .map(|(value, condition)| MeasureLayout {
            kind: value.kind(),
            contributors: condition.map(|c| persons + 1 + c),
            rounded: !value.is_structural(),
        })
        .collect()
}

/// The layout of a cells plan's output.
#[derive(Debug, Clone)]
pub struct CellsLayout {
    /// Columns that are the aggregate's own output, in its order.
    pub output_columns: usize,
    /// Among them, the leading group columns (with `__grouping_id` for
    /// grouping sets).
    pub group_columns: usize,
    /// For grouping sets: the number of distinct group expressions and the
    /// position of `__grouping_id`.
    pub grouping: Option<(usize, usize)>,
    /// Each aggregate value, in order.
    pub measures: Vec<MeasureLayout>,
    /// Column of the distinct-person count.
    pub persons: usize,
    /// The dominance inputs of each sensitive measure.
    pub dominance: Vec<DominanceColumns>,
    /// For a bounded cells plan (dp mode): what each value's noise is added
    /// to, in the values' order. Empty otherwise.
    pub noisy: Vec<NoisyValue>,
}

/// The number of distinct expressions of a grouping set, and the position of
/// `__grouping_id` among the aggregate's group columns.
pub(super) fn grouping_info(group_expr: &[Expr], group_columns: usize) -> Option<(usize, usize)> {
    matches!(group_expr, [Expr::GroupingSet(_)]).then(|| (group_columns - 1, group_columns - 1))
}
