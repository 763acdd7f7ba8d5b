//! The cells plan of a released aggregate: the user's aggregate, plus the
//! columns the release step needs to decide, cell by cell and value by
//! value, what may leave.
//!
//! Besides the user's values, each cell gets:
//!
//! - the number of distinct persons of the cell (rule 2), counted up to the
//!   threshold where an exact count is not needed
//!   ([`crate::rules::distinct_persons`]);
//! - for each value that is not computed from every row of the cell (a
//!   FILTER, a NULL or zero argument, see [`measures::Value::contributing_rows`]),
//!   the number of persons who contribute to it: rule 2 read per value;
//! - for each sensitive sum, its total and largest per-person contributions,
//!   for the dominance rules (rule 6).
//!
//! Values that need persons' partial results (sums clamped per person, order
//! statistics over persons) are computed in several levels
//! ([`per_person`]); the others in one aggregate ([`single_level`]).

pub mod measures;
mod per_person;
mod single_level;

use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Expr, LogicalPlan};
use seuil_policies::Role;

use crate::error::EngineError;
use crate::rewrite::lineage::PersonLineage;
pub use measures::{Measure, MeasureKind, OrderKind, Value};

/// Name of the per-cell distinct-person count in the cells plan.
pub const PERSONS_COLUMN: &str = "__seuil_persons";

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

/// Builds the cells plan of a released aggregate over `input`: resolves its
/// values ([`measures::resolve`]) and picks the plan they need.
pub fn cells_plan(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    aggr_expr: Vec<Expr>,
    original_schema: &DFSchemaRef,
    lineage: &PersonLineage,
    role: &Role,
) -> Result<(LogicalPlan, CellsLayout), EngineError> {
    let values = aggr_expr
        .iter()
        .map(|call| measures::resolve(call, lineage, role, input.schema()))
        .collect::<Result<Vec<_>, _>>()?;
    if values.iter().any(Value::needs_persons) {
        per_person::PerPersonPlan::new(input, group_expr, &values, lineage, role)?
            .build(original_schema)
    } else {
        single_level::cells_plan(input, group_expr, &values, lineage, role)
    }
}

/// How many largest contributions the role's dominance rules look at.
pub fn dominance_depth(role: &Role) -> usize {
    let nk = role.dominance.map_or(0, |d| d.n as usize);
    let p = if role.p_percent.is_some() { 2 } else { 0 };
    nk.max(p)
}

/// The number of distinct expressions of a grouping set, and the position of
/// `__grouping_id` among the aggregate's group columns.
fn grouping_info(group_expr: &[Expr], group_columns: usize) -> Option<(usize, usize)> {
    matches!(group_expr, [Expr::GroupingSet(_)]).then(|| (group_columns - 1, group_columns - 1))
}
