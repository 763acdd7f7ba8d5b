//! Rule 7, margins must not give cells back.
//!
//! > When one result has totals and subtotals (`ROLLUP`, `CUBE`,
//! > `GROUPING SETS`, or several aggregates of one query, as in a `UNION
//! > ALL` of a total and its breakdown), suppress enough extra cells
//! > (secondary suppression) that no suppressed cell can be computed from
//! > everything the query releases, or refuse what cannot be protected.
//!
//! A table with margins satisfies linear relations: a total equals the sum
//! of the cells it breaks down into, and two breakdowns of the same rows
//! (`GROUPING SETS ((sex), (dpt))`) have equal sums. An attacker who knows
//! the released cells and these relations can bound every suppressed cell
//! by solving two linear programs (its smallest and largest value), as
//! sdcTable's `attack()` does. A cell or value suppressed by a primary rule
//! (persons, dominance, too few contributors) is protected when that range
//! reaches at least `protection_percent` of its value below and above it.
//! Cells hidden by secondary suppression are safe cells: as in sdcTable,
//! they need no protection of their own.
//!
//! The tables come from two places: one aggregate's grouping sets, and the
//! released aggregates of one query that read the same rows with the same
//! values ([`MarginShape`]: same input up to names, nested group keys), such
//! as the branches of a `UNION ALL`. Aggregates over different rows (other
//! filters) are not additive over one another in a way the rewrite can
//! know: comparing them is differencing, the honest limit of threshold mode
//! (DESIGN.md §2).
//!
//! The suppression method is a heuristic: first no relation may hold a
//! single hidden value (else it is the other side minus the released ones);
//! then the audit runs, and while a suppressed cell is not protected, the
//! smallest released cell of one of its relations is suppressed too. The
//! audit, not the heuristic, decides when the table is safe. When the audit
//! cannot be completed within its budget, every cell of the table is
//! suppressed rather than risk releasing a derivable one.
//!
//! The audit stays small on tables with many suppressed cells: each linear
//! program covers only the part of the table linked to its cell (the
//! relations between hidden cells), and every solution found is a table
//! the attacker cannot rule out, which shows other cells' ranges too
//! ([`Witnesses`]). Joint programs that push all unsettled cells down, then
//! up, settle most of them; a cell gets its own programs only for a side
//! that no solution seen so far reaches.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use datafusion::scalar::ScalarValue;
use microlp::{ComparisonOp, OptimizationDirection, Problem};

use crate::cancellation::Cancellation;

pub use crate::limits::{MAX_GROUPING_DIMENSIONS, MAX_GROUPING_SETS, MAX_MARGIN_CELLS};

/// Refuses, before anything expands them, grouping sets past the caps: a
/// `CUBE` of `n` expressions is `2^n` sets, and each set copies every input
/// row once more.
pub fn check_grouping_size(group_expr: &[Expr]) -> Result<(), crate::error::EngineError> {
    let [Expr::GroupingSet(set)] = group_expr else {
        return Ok(());
    };
    let dimensions = set.distinct_expr().len();
    let sets = match set {
        datafusion::logical_expr::expr::GroupingSet::Rollup(exprs) => exprs.len() + 1,
        datafusion::logical_expr::expr::GroupingSet::Cube(exprs) => {
            1usize.checked_shl(exprs.len() as u32).unwrap_or(usize::MAX)
        }
        datafusion::logical_expr::expr::GroupingSet::GroupingSets(sets) => sets.len(),
    };
    if dimensions > MAX_GROUPING_DIMENSIONS {
        return Err(crate::error::EngineError::Limit(format!(
            "the grouping sets use {dimensions} distinct expressions; at most {MAX_GROUPING_DIMENSIONS} are allowed"
        )));
    }
    if sets > MAX_GROUPING_SETS {
        return Err(crate::error::EngineError::Limit(format!(
            "the query asks for {sets} grouping sets; at most {MAX_GROUPING_SETS} are allowed"
        )));
    }
    Ok(())
}

/// How one released aggregate takes part in tables with margins: which
/// rows it aggregates (its input up to names), by what (its dimensions) and
/// with which additive values (its measures). Aggregates of one query with
/// the same `family` are protected together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarginShape {
    /// The aggregate's input, written without names: equal for aggregates
    /// over the same rows.
    pub family: String,
    /// Each distinct group expression, written without names.
    pub dimensions: Vec<String>,
    /// The same, as the user wrote them, for the audit log.
    pub display: Vec<String>,
    /// Each value, written without names when it is additive over cells
    /// (`None` otherwise).
    pub measures: Vec<Option<String>>,
}

/// An expression without its aliases and its columns' qualifiers: the same
/// text for `b.ben_sex_cod` and `ir_ben_r.ben_sex_cod AS s`.
pub fn unnamed(expr: &Expr) -> String {
    let unaliased = expr.clone().unalias_nested().data;
    unaliased
        .transform(|e| match e {
            Expr::Column(column) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                column.name,
            )))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data.to_string())
        .unwrap_or_else(|_| expr.to_string())
}

fn write_unnamed_plan(plan: &LogicalPlan, out: &mut String) {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => return write_unnamed_plan(&alias.input, out),
        LogicalPlan::TableScan(scan) => {
            let _ = write!(out, "Scan({}", scan.table_name.table());
            for filter in &scan.filters {
                let _ = write!(out, ",{}", unnamed(filter));
            }
            let _ = write!(out, ",{:?},{:?})", scan.projection, scan.fetch);
            return;
        }
        _ => {}
    }
    let display = plan.display().to_string();
    let kind = display.split(':').next().unwrap_or("");
    let _ = write!(out, "{kind}(");
    for expr in plan.expressions() {
        let _ = write!(out, "{};", unnamed(&expr));
    }
    out.push('[');
    for input in plan.inputs() {
        write_unnamed_plan(input, out);
        out.push(',');
    }
    out.push_str("])");
}

/// The margin shape of a released aggregate of the user's plan.
pub fn shape_of(aggregate: &Aggregate, additive: &[bool]) -> MarginShape {
    let mut family = String::new();
    write_unnamed_plan(&aggregate.input, &mut family);
    let distinct: Vec<Expr> = match aggregate.group_expr.as_slice() {
        [Expr::GroupingSet(set)] => set.distinct_expr().into_iter().cloned().collect(),
        exprs => exprs.to_vec(),
    };
    MarginShape {
        family,
        dimensions: distinct.iter().map(unnamed).collect(),
        display: distinct
            .iter()
            .map(|e| e.schema_name().to_string())
            .collect(),
        measures: aggregate
            .aggr_expr
            .iter()
            .zip(additive)
            .map(|(e, additive)| additive.then(|| unnamed(e)))
            .collect(),
    }
}

/// The cells of a table with margins, as the attacker sees them.
#[derive(Debug, Clone)]
pub struct MarginTable {
    /// Group values of each cell (one per dimension; the untyped
    /// `ScalarValue::Null` where the cell aggregates over the dimension).
    pub keys: Vec<Vec<ScalarValue>>,
    /// Per cell, the bit mask of dimensions the cell aggregates over (bit 0
    /// is the last dimension), as DataFusion's grouping id has it.
    pub masks: Vec<u64>,
    /// Values of each additive measure, per cell; `None` for cells of an
    /// aggregate that does not release the measure.
    pub measures: Vec<Vec<Option<f64>>>,
    /// Whether each measure's values cannot be negative.
    pub non_negative: Vec<bool>,
}

/// One relation: the cells of `plus` sum to the same as those of `minus`
/// (a total and its cells, or two breakdowns of the same rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// One side.
    pub plus: Vec<usize>,
    /// The other.
    pub minus: Vec<usize>,
}

impl Relation {
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.plus.iter().chain(&self.minus).copied()
    }
}

/// The dimensions a mask keeps (bit set: aggregated over).
fn kept(mask: u64, dimensions: usize) -> u64 {
    !mask & ((1u64 << dimensions) - 1)
}

/// The key of a cell projected on the dimensions of `dims`; the others
/// become the untyped NULL that marks a dimension aggregated over (a NULL
/// group value of the data keeps its type, so the two never meet).
fn projected(key: &[ScalarValue], dims: u64, dimensions: usize) -> Vec<ScalarValue> {
    key.iter()
        .enumerate()
        .map(|(d, v)| {
            if dims & (1 << (dimensions - 1 - d)) != 0 {
                v.clone()
            } else {
                ScalarValue::Null
            }
        })
        .collect()
}

/// The linear relations of a table with margins. Between two sets of
/// dimensions `A ⊂ B` with no set between them, each cell of `A` is the sum
/// of the cells of `B` with its values; between two sets that neither
/// contains, the cells of each with the same values on their common
/// dimensions have equal sums, unless a set of their common dimensions or
/// one containing both already implies it.
pub fn relations(table: &MarginTable, dimensions: usize) -> Vec<Relation> {
    let sets: BTreeSet<u64> = table.masks.iter().map(|m| kept(*m, dimensions)).collect();
    let sets: Vec<u64> = sets.into_iter().collect();
    let mut relations = Vec::new();
    for (i, &a) in sets.iter().enumerate() {
        for &b in &sets[i + 1..] {
            let (coarse, fine) = if a & b == a {
                (a, b)
            } else if a & b == b {
                (b, a)
            } else {
                let common = a & b;
                let implied = sets
                    .iter()
                    .any(|&s| s == common || (s & (a | b)) == (a | b));
                if !implied {
                    relations.extend(equal_sums(table, dimensions, a, b, common));
                }
                continue;
            };
            let between = sets
                .iter()
                .any(|&s| s != coarse && s != fine && s & coarse == coarse && s & fine == s);
            if !between {
                relations.extend(equal_sums(table, dimensions, coarse, fine, coarse));
            }
        }
    }
    relations.sort_by(|a, b| (&a.plus, &a.minus).cmp(&(&b.plus, &b.minus)));
    relations.dedup();
    relations
}

/// For each value of the `common` dimensions: the cells of set `a` with
/// that value sum to those of set `b`.
fn equal_sums(
    table: &MarginTable,
    dimensions: usize,
    a: u64,
    b: u64,
    common: u64,
) -> Vec<Relation> {
    let mut sides: HashMap<Vec<ScalarValue>, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (cell, (mask, key)) in table.masks.iter().zip(&table.keys).enumerate() {
        let set = kept(*mask, dimensions);
        if set != a && set != b {
            continue;
        }
        let entry = sides.entry(projected(key, common, dimensions)).or_default();
        if set == a {
            entry.0.push(cell);
        } else {
            entry.1.push(cell);
        }
    }
    sides
        .into_values()
        .filter(|(plus, minus)| !plus.is_empty() || !minus.is_empty())
        .map(|(mut plus, mut minus)| {
            plus.sort_unstable();
            minus.sort_unstable();
            Relation { plus, minus }
        })
        .collect()
}

/// The relations that hold for one measure: those whose cells all release it.
fn relations_of(table: &MarginTable, relations: &[Relation], measure: usize) -> Vec<Relation> {
    relations
        .iter()
        .filter(|r| r.members().all(|c| table.measures[measure][c].is_some()))
        .cloned()
        .collect()
}

/// The range of values of `cell` that an attacker can derive, for one
/// measure, from the released cells and the relations; `None` when the
/// linear programs could not be solved.
pub fn attack(
    table: &MarginTable,
    relations: &[Relation],
    hidden: &[bool],
    measure: usize,
    cell: usize,
) -> Option<(f64, f64)> {
    let low = bound(
        table,
        relations,
        hidden,
        measure,
        cell,
        OptimizationDirection::Minimize,
        None,
    )?;
    // An unbounded maximum is the best protection there is.
    let high = bound(
        table,
        relations,
        hidden,
        measure,
        cell,
        OptimizationDirection::Maximize,
        None,
    )
    .unwrap_or(f64::INFINITY);
    Some((low, high))
}

/// Tables the attacker cannot rule out, as far as the linear programs
/// solved so far have shown them: for each cell of one measure, the
/// smallest and largest value it takes in one of them.
///
/// Every solution of an attacker's linear program is such a table, whatever
/// cell it was solved for, and it stays one when more cells are hidden
/// (with the newly hidden cells at their true values). So a cell that some
/// solutions already put far enough below and above its value is protected
/// without linear programs of its own: in a table with many suppressed
/// cells, the solutions for a few of them protect most of the others.
#[derive(Debug, Clone)]
pub struct Witnesses {
    low: Vec<f64>,
    high: Vec<f64>,
}

impl Witnesses {
    /// The true table, the first the attacker cannot rule out.
    pub fn new(values: &[Option<f64>]) -> Self {
        let values: Vec<f64> = values.iter().map(|v| v.unwrap_or(0.0)).collect();
        Self {
            low: values.clone(),
            high: values,
        }
    }

    /// The smallest and largest values of `cell` seen.
    pub fn range(&self, cell: usize) -> (f64, f64) {
        (self.low[cell], self.high[cell])
    }

    fn record(&mut self, cell: usize, value: f64) {
        self.low[cell] = self.low[cell].min(value);
        self.high[cell] = self.high[cell].max(value);
    }
}

/// The smallest (or largest) value of `cell` an attacker can derive, for
/// one measure; `None` when the linear program has no solution (for a
/// maximum: it is unbounded). The solution's table goes into `witnesses`.
fn bound(
    table: &MarginTable,
    relations: &[Relation],
    hidden: &[bool],
    measure: usize,
    cell: usize,
    direction: OptimizationDirection,
    witnesses: Option<&mut Witnesses>,
) -> Option<f64> {
    if !hidden[cell] {
        // A released value is known exactly.
        return table.measures[measure][cell];
    }
    let attacker = Attacker {
        table,
        relations,
        hidden,
        measure,
    };
    attacker.solve(&[cell], direction, None, witnesses)
}

/// The attacker's linear system for one measure: the hidden cells are
/// unknowns, the relations equations.
struct Attacker<'a> {
    table: &'a MarginTable,
    relations: &'a [Relation],
    hidden: &'a [bool],
    measure: usize,
}

impl Attacker<'_> {
    /// Minimises (or maximises) the sum of the hidden `cells`, over the
    /// parts of the system linked to them, with every unknown within
    /// `±cap` when given (a restriction: the solution is still a table the
    /// attacker cannot rule out). The solution's table goes into
    /// `witnesses`; `None` when there is no solution.
    fn solve(
        &self,
        cells: &[usize],
        direction: OptimizationDirection,
        cap: Option<f64>,
        witnesses: Option<&mut Witnesses>,
    ) -> Option<f64> {
        let values = &self.table.measures[self.measure];
        let lower = if self.table.non_negative[self.measure] {
            0.0
        } else {
            cap.map_or(f64::NEG_INFINITY, |c| -c)
        };
        let upper = cap.unwrap_or(f64::INFINITY);
        let mut component = Vec::new();
        let mut linked = BTreeSet::new();
        let mut reached = vec![false; self.hidden.len()];
        for &cell in cells {
            if reached[cell] {
                continue;
            }
            let (cells_linked, relations_linked) = component_of(self.relations, self.hidden, cell);
            for c in cells_linked {
                reached[c] = true;
                component.push(c);
            }
            linked.extend(relations_linked);
        }
        let mut problem = Problem::new(direction);
        let variables: Vec<(usize, microlp::Variable)> = component
            .iter()
            .map(|&i| {
                let objective = if cells.contains(&i) { 1.0 } else { 0.0 };
                (i, problem.add_var(objective, (lower, upper)))
            })
            .collect();
        let variable_of: HashMap<usize, microlp::Variable> = variables.iter().copied().collect();
        for relation in linked.iter().map(|&r| &self.relations[r]) {
            let members = relation
                .plus
                .iter()
                .map(|&c| (c, 1.0))
                .chain(relation.minus.iter().map(|&c| (c, -1.0)));
            let mut terms = Vec::new();
            let mut constant = 0.0;
            for (member, sign) in members {
                match variable_of.get(&member) {
                    Some(&variable) => terms.push((variable, sign)),
                    None => constant += sign * values[member].unwrap_or(0.0),
                }
            }
            if terms.is_empty() {
                continue;
            }
            problem.add_constraint(&terms, ComparisonOp::Eq, -constant);
        }
        let solution = problem.solve().ok()?.into_solution().ok()?;
        if let Some(witnesses) = witnesses {
            for (i, variable) in &variables {
                witnesses.record(*i, solution.var_value(*variable));
            }
        }
        Some(solution.objective())
    }
}

/// The hidden cells linked to `cell` through relations, and those
/// relations: the only part of the attacker's system that bounds `cell`.
/// The other relations hold other unknowns only; the whole system holds for
/// the true values, so leaving them out changes no range, and the linear
/// programs of a large table with many suppressed cells stay the size of
/// the cell's own part of it.
fn component_of(relations: &[Relation], hidden: &[bool], cell: usize) -> (Vec<usize>, Vec<usize>) {
    let mut relations_of_cell: HashMap<usize, Vec<usize>> = HashMap::new();
    for (r, relation) in relations.iter().enumerate() {
        for member in relation.members().filter(|m| hidden[*m]) {
            relations_of_cell.entry(member).or_default().push(r);
        }
    }
    let mut reached = vec![false; hidden.len()];
    let mut used = vec![false; relations.len()];
    reached[cell] = true;
    let mut component = vec![cell];
    let mut linked = Vec::new();
    let mut next = 0;
    while next < component.len() {
        let member = component[next];
        next += 1;
        for &r in relations_of_cell.get(&member).into_iter().flatten() {
            if std::mem::replace(&mut used[r], true) {
                continue;
            }
            linked.push(r);
            for other in relations[r].members() {
                if hidden[other] && !std::mem::replace(&mut reached[other], true) {
                    component.push(other);
                }
            }
        }
    }
    linked.sort_unstable();
    (component, linked)
}

/// Whether the tables seen put `cell` far enough below (or above) its
/// value.
fn side_settled(
    witnesses: &Witnesses,
    table: &MarginTable,
    measure: usize,
    cell: usize,
    direction: OptimizationDirection,
    protection_percent: f64,
) -> bool {
    let value = table.measures[measure][cell].unwrap_or(0.0);
    let (low, high) = witnesses.range(cell);
    let range = match direction {
        OptimizationDirection::Minimize => (low, f64::INFINITY),
        OptimizationDirection::Maximize => (f64::NEG_INFINITY, high),
    };
    is_protected(range, value, protection_percent)
}

/// True when the attacker's range around `value` is wide enough.
pub fn is_protected(range: (f64, f64), value: f64, protection_percent: f64) -> bool {
    let margin = value.abs() * protection_percent / 100.0;
    // A tolerance for the solver's round-off.
    let slack = 1e-6 * value.abs().max(1.0);
    range.0 <= value - margin + slack && range.1 >= value + margin - slack
}

/// The cheapest released cell among the relations of `cell`, or, when all
/// their cells are hidden, among the relations of those hidden cells, one
/// ring further at a time.
fn nearest_released(
    relations: &[Relation],
    hidden: &[bool],
    cell: usize,
    suppressed: &[bool],
    size: &dyn Fn(usize) -> f64,
) -> Option<usize> {
    let mut visited = vec![false; hidden.len()];
    visited[cell] = true;
    let mut ring = vec![cell];
    while !ring.is_empty() {
        let mut next_ring = Vec::new();
        let mut best: Option<usize> = None;
        for relation in relations
            .iter()
            .filter(|r| r.members().any(|m| ring.contains(&m)))
        {
            for member in relation.members() {
                if !suppressed[member] && !hidden[member] {
                    let better = best.is_none_or(|b| {
                        size(member)
                            .total_cmp(&size(b))
                            .then(member.cmp(&b))
                            .is_lt()
                    });
                    if better {
                        best = Some(member);
                    }
                } else if !visited[member] {
                    visited[member] = true;
                    next_ring.push(member);
                }
            }
        }
        if best.is_some() {
            return best;
        }
        ring = next_ring;
    }
    None
}

/// How many linear programs one table may cost before it is suppressed whole.
const AUDIT_BUDGET: usize = 20_000;

/// At most this many joint linear programs per measure, side and pass.
const JOINT_ROUNDS: usize = 16;

/// Chooses the secondary suppressions of a table: returns the cells to hide
/// in addition to `primary_cells` (cells suppressed whole) and
/// `primary_values` (per measure, values suppressed in released cells).
/// Every primary suppression passes the attacker's audit afterwards, or the
/// whole table is suppressed. `None` when cancelled.
pub fn secondary_suppression(
    table: &MarginTable,
    dimensions: usize,
    primary_cells: &[bool],
    primary_values: &[Vec<bool>],
    protection_percent: f64,
    cancellation: &Cancellation,
) -> Option<Vec<usize>> {
    let cells = primary_cells.len();
    let all = relations(table, dimensions);
    let per_measure: Vec<Vec<Relation>> = (0..table.measures.len())
        .map(|m| relations_of(table, &all, m))
        .collect();
    let mut suppressed = primary_cells.to_vec();
    let any_primary = suppressed.iter().any(|s| *s)
        || primary_values
            .iter()
            .any(|values| values.iter().any(|v| *v));
    if all.is_empty() || !any_primary {
        return Some(Vec::new());
    }
    let hidden_in = |suppressed: &[bool], measure: usize| -> Vec<bool> {
        (0..cells)
            .map(|c| suppressed[c] || primary_values[measure][c])
            .collect()
    };
    let size = |cell: usize| {
        table
            .measures
            .iter()
            .find_map(|m| m[cell])
            .map_or(0.0, f64::abs)
    };
    let cheapest_released = |members: &mut dyn Iterator<Item = usize>, suppressed: &[bool]| {
        members
            .filter(|m| !suppressed[*m])
            .min_by(|a, b| size(*a).total_cmp(&size(*b)).then(a.cmp(b)))
    };
    // The audit's targets: every primary suppression, for every measure it
    // hides. (Secondary cells are safe cells, hidden only to protect the
    // primary ones; an attacker may compute them.) A zero is protected by
    // any range that holds it, so it needs no linear program.
    let mut pending: Vec<(usize, usize)> = (0..table.measures.len())
        .flat_map(|measure| (0..cells).map(move |cell| (measure, cell)))
        .filter(|&(measure, cell)| {
            (primary_cells[cell] || primary_values[measure][cell])
                && table.measures[measure][cell].is_some_and(|v| v != 0.0)
        })
        .collect();
    let mut budget = AUDIT_BUDGET;
    let mut witnesses: Vec<Witnesses> = table.measures.iter().map(|m| Witnesses::new(m)).collect();
    // A bound on the unknowns of the joint linear programs, far beyond any
    // cell's value, so that they are never unbounded.
    let cap: Vec<f64> = table
        .measures
        .iter()
        .map(|m| 4.0 * m.iter().flatten().map(|v| v.abs()).fold(1.0, f64::max))
        .collect();
    'pattern: loop {
        if cancellation.is_cancelled() {
            return None;
        }
        // No relation may hold exactly one hidden value.
        let mut changed = true;
        while changed {
            changed = false;
            for (measure, relations) in per_measure.iter().enumerate() {
                for relation in relations {
                    let hidden = relation
                        .members()
                        .filter(|m| suppressed[*m] || primary_values[measure][*m])
                        .count();
                    if hidden == 1
                        && let Some(cell) = cheapest_released(&mut relation.members(), &suppressed)
                    {
                        suppressed[cell] = true;
                        changed = true;
                    }
                }
            }
        }
        // First, for each measure, the tables that put all the targets
        // still unsettled as low, then as high, as they can go together:
        // most targets are settled by these two, and the others get their
        // own linear programs below.
        for (measure, witnessed) in witnesses.iter_mut().enumerate() {
            let hidden = hidden_in(&suppressed, measure);
            let attacker = Attacker {
                table,
                relations: &per_measure[measure],
                hidden: &hidden,
                measure,
            };
            for direction in [
                OptimizationDirection::Minimize,
                OptimizationDirection::Maximize,
            ] {
                // Again with the targets still unsettled, while a round
                // settles some: each solution pushes only some cells to the
                // side asked for.
                let mut settled_before = usize::MAX;
                for _ in 0..JOINT_ROUNDS {
                    let unsettled: Vec<usize> = pending
                        .iter()
                        .filter(|(m, cell)| {
                            *m == measure
                                && !side_settled(
                                    witnessed,
                                    table,
                                    *m,
                                    *cell,
                                    direction,
                                    protection_percent,
                                )
                        })
                        .map(|(_, cell)| *cell)
                        .collect();
                    if unsettled.len() < 2 || unsettled.len() == settled_before {
                        break;
                    }
                    settled_before = unsettled.len();
                    if budget == 0 {
                        suppressed.iter_mut().for_each(|s| *s = true);
                        break 'pattern;
                    }
                    budget -= 1;
                    attacker.solve(&unsettled, direction, Some(cap[measure]), Some(witnessed));
                }
            }
        }
        // One pass over the targets still to check. Hiding more only widens
        // the attacker's ranges, so a target found protected stays so: only
        // those that were not are checked again, after the pass.
        let mut unprotected = Vec::new();
        for &(measure, cell) in &pending {
            if cancellation.is_cancelled() {
                return None;
            }
            let relations = &per_measure[measure];
            let hidden = hidden_in(&suppressed, measure);
            let value = table.measures[measure][cell].unwrap_or(0.0);
            let witnessed = &mut witnesses[measure];
            // Each side is settled by the tables seen so far, or by its own
            // linear program (whose solution is one more table seen).
            let mut solvable = true;
            for direction in [
                OptimizationDirection::Minimize,
                OptimizationDirection::Maximize,
            ] {
                let settled = side_settled(
                    witnessed,
                    table,
                    measure,
                    cell,
                    direction,
                    protection_percent,
                );
                if settled || !solvable {
                    continue;
                }
                if budget == 0 {
                    suppressed.iter_mut().for_each(|s| *s = true);
                    break 'pattern;
                }
                budget -= 1;
                let found = bound(
                    table,
                    relations,
                    &hidden,
                    measure,
                    cell,
                    direction,
                    Some(witnessed),
                );
                match (direction, found) {
                    (OptimizationDirection::Minimize, Some(low)) => witnessed.record(cell, low),
                    (OptimizationDirection::Minimize, None) => solvable = false,
                    // An unbounded maximum is the best protection there is.
                    (OptimizationDirection::Maximize, found) => {
                        witnessed.record(cell, found.unwrap_or(f64::INFINITY));
                    }
                }
            }
            let protected =
                solvable && is_protected(witnessed.range(cell), value, protection_percent);
            if protected {
                continue;
            }
            // Widen the range: hide the smallest released cell of the cell's
            // relations, or, when they are all hidden already, of the
            // relations of those hidden cells, and so on outwards.
            match nearest_released(relations, &hidden, cell, &suppressed, &size) {
                Some(next) => {
                    suppressed[next] = true;
                    unprotected.push((measure, cell));
                }
                None => {
                    // Nothing released is linked to the cell, yet it is not
                    // protected: hide the whole table rather than release a
                    // derivable cell.
                    suppressed.iter_mut().for_each(|s| *s = true);
                    break 'pattern;
                }
            }
        }
        if unprotected.is_empty() {
            break;
        }
        pending = unprotected;
    }
    Some(
        (0..cells)
            .filter(|&c| suppressed[c] && !primary_cells[c])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: Option<&str>) -> ScalarValue {
        ScalarValue::Utf8(s.map(String::from))
    }

    /// A 2 x 2 table with margins (ROLLUP-like CUBE on two dimensions).
    fn cube(values: [[f64; 2]; 2]) -> MarginTable {
        let mut keys = Vec::new();
        let mut masks = Vec::new();
        let mut measure = Vec::new();
        let rows = [Some("r1"), Some("r2")];
        let columns = [Some("c1"), Some("c2")];
        for (i, r) in rows.iter().enumerate() {
            for (j, c) in columns.iter().enumerate() {
                keys.push(vec![text(*r), text(*c)]);
                masks.push(0);
                measure.push(Some(values[i][j]));
            }
            keys.push(vec![text(*r), ScalarValue::Null]);
            masks.push(0b01);
            measure.push(Some(values[i].iter().sum()));
        }
        for (j, c) in columns.iter().enumerate() {
            keys.push(vec![ScalarValue::Null, text(*c)]);
            masks.push(0b10);
            measure.push(Some(values[0][j] + values[1][j]));
        }
        keys.push(vec![ScalarValue::Null, ScalarValue::Null]);
        masks.push(0b11);
        measure.push(Some(values.iter().flatten().sum()));
        MarginTable {
            keys,
            masks,
            measures: vec![measure],
            non_negative: vec![true],
        }
    }

    fn total_of(parent: usize, children: Vec<usize>) -> Relation {
        Relation {
            plus: vec![parent],
            minus: children,
        }
    }

    #[test]
    fn relations_of_a_cube() {
        let table = cube([[10.0, 20.0], [30.0, 40.0]]);
        // Cells: 0 (r1,c1) 1 (r1,c2) 2 (r1,*) 3 (r2,c1) 4 (r2,c2) 5 (r2,*)
        // 6 (*,c1) 7 (*,c2) 8 (*,*)
        let relations = relations(&table, 2);
        assert!(relations.contains(&total_of(2, vec![0, 1])));
        assert!(relations.contains(&total_of(6, vec![0, 3])));
        assert!(relations.contains(&total_of(8, vec![2, 5])));
        assert!(relations.contains(&total_of(8, vec![6, 7])));
        assert_eq!(relations.len(), 6);
    }

    #[test]
    fn two_breakdowns_without_their_total_have_equal_sums() {
        // GROUPING SETS ((r), (c)): no total, no finest cells.
        let mut table = cube([[10.0, 20.0], [30.0, 40.0]]);
        let keep: Vec<usize> = vec![2, 5, 6, 7];
        table.keys = keep.iter().map(|&i| table.keys[i].clone()).collect();
        table.masks = keep.iter().map(|&i| table.masks[i]).collect();
        table.measures[0] = keep.iter().map(|&i| table.measures[0][i]).collect();
        let relations = relations(&table, 2);
        assert_eq!(relations.len(), 1);
        let sides = [relations[0].plus.clone(), relations[0].minus.clone()];
        assert!(
            sides.contains(&vec![0, 1]) && sides.contains(&vec![2, 3]),
            "{relations:?}"
        );
        // One hidden row total is its sum minus the other's.
        let mut hidden = vec![false; 4];
        hidden[0] = true;
        let range = attack(&table, &relations, &hidden, 0, 0).unwrap();
        assert!((range.0 - 30.0).abs() < 1e-6 && (range.1 - 30.0).abs() < 1e-6);
    }

    #[test]
    fn a_total_and_its_finest_cells_relate_without_the_sets_between() {
        // GROUPING SETS ((), (r, c)).
        let mut table = cube([[3.0, 20.0], [30.0, 40.0]]);
        let keep: Vec<usize> = vec![0, 1, 3, 4, 8];
        table.keys = keep.iter().map(|&i| table.keys[i].clone()).collect();
        table.masks = keep.iter().map(|&i| table.masks[i]).collect();
        table.measures[0] = keep.iter().map(|&i| table.measures[0][i]).collect();
        let relations = relations(&table, 2);
        assert_eq!(relations, vec![total_of(4, vec![0, 1, 2, 3])]);
    }

    #[test]
    fn a_lone_suppressed_cell_is_derived_exactly() {
        let table = cube([[3.0, 20.0], [30.0, 40.0]]);
        let relations = relations(&table, 2);
        let mut suppressed = vec![false; 9];
        suppressed[0] = true;
        let range = attack(&table, &relations, &suppressed, 0, 0).unwrap();
        assert!((range.0 - 3.0).abs() < 1e-6 && (range.1 - 3.0).abs() < 1e-6);
        assert!(!is_protected(range, 3.0, 10.0));
    }

    #[test]
    fn secondary_suppression_protects_the_primary_cell() {
        let table = cube([[3.0, 20.0], [30.0, 40.0]]);
        let mut primary = vec![false; 9];
        primary[0] = true;
        let none = vec![vec![false; 9]];
        let secondary =
            secondary_suppression(&table, 2, &primary, &none, 10.0, &Cancellation::default())
                .unwrap();
        // The classic pattern: a rectangle of four inner cells.
        assert_eq!(secondary, vec![1, 3, 4]);
        let mut suppressed = primary.clone();
        for cell in &secondary {
            suppressed[*cell] = true;
        }
        let relations = relations(&table, 2);
        for (cell, _) in primary.iter().enumerate() {
            if primary[cell] {
                let range = attack(&table, &relations, &suppressed, 0, cell).unwrap();
                assert!(
                    is_protected(range, table.measures[0][cell].unwrap(), 10.0),
                    "cell {cell}: {range:?}"
                );
            }
        }
    }

    #[test]
    fn a_suppressed_value_is_protected_like_a_cell() {
        let table = cube([[3.0, 20.0], [30.0, 40.0]]);
        let mut values = vec![vec![false; 9]];
        values[0][0] = true;
        let secondary = secondary_suppression(
            &table,
            2,
            &[false; 9],
            &values,
            10.0,
            &Cancellation::default(),
        )
        .unwrap();
        let mut hidden = values[0].clone();
        for cell in &secondary {
            hidden[*cell] = true;
        }
        let range = attack(&table, &relations(&table, 2), &hidden, 0, 0).unwrap();
        assert!(is_protected(range, 3.0, 10.0), "{range:?}");
    }

    #[test]
    fn nothing_to_do_without_primary_suppression() {
        let table = cube([[13.0, 20.0], [30.0, 40.0]]);
        let none = vec![vec![false; 9]];
        assert!(
            secondary_suppression(
                &table,
                2,
                &[false; 9],
                &none,
                10.0,
                &Cancellation::default()
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn a_cancelled_audit_stops() {
        let table = cube([[3.0, 20.0], [30.0, 40.0]]);
        let mut primary = vec![false; 9];
        primary[0] = true;
        let cancellation = Cancellation::default();
        cancellation.cancel();
        let none = vec![vec![false; 9]];
        assert!(secondary_suppression(&table, 2, &primary, &none, 10.0, &cancellation).is_none());
    }
}
