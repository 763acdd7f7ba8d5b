//! The layout of a cells plan's output, as the release step reads it, and
//! what a release mechanism asks the cells plan to compute.

use datafusion::logical_expr::Expr;

use super::measures::{MeasureKind, Value};

/// What a release mechanism needs of each cell besides the user's values
/// ([`crate::release::ReleaseMechanism::cells_needs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellsNeeds {
    /// Distinct persons (of a cell, of a value's contributors) are counted
    /// up to this number: the release only asks whether there are that many.
    pub persons_up_to: u32,
    /// How many of the largest per-person contributions of each sensitive
    /// sum are computed (0 for none).
    pub largest: usize,
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
}

/// The number of distinct expressions of a grouping set, and the position of
/// `__grouping_id` among the aggregate's group columns.
pub(super) fn grouping_info(group_expr: &[Expr], group_columns: usize) -> Option<(usize, usize)> {
    matches!(group_expr, [Expr::GroupingSet(_)]).then(|| (group_columns - 1, group_columns - 1))
}
