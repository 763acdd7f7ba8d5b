//! The attacker of tables with margins, written apart from the engine's own
//! (engine/src/rules/margins.rs): it knows every released value, which cells
//! exist (from the raw data) and that every breakdown of the same rows sums
//! to the same total, and bounds each hidden value by linear programming,
//! as sdcTable's `attack()` does.

use std::collections::{BTreeSet, HashMap};

use microlp::{ComparisonOp, OptimizationDirection, Problem};

/// A cell of a table with margins: its value in each dimension, `None` where
/// it aggregates over the dimension.
pub type CellKey = Vec<Option<String>>;

/// The cells on each side of one relation.
type Sides = (Vec<usize>, Vec<usize>);

/// Every relation a table with margins gives away: for any two sets of
/// dimensions present, the cells of each that agree on the dimensions both
/// keep have equal sums (a total and its cells, or two breakdowns of the
/// same rows). Each relation is (one side, the other side).
pub fn relations(keys: &[CellKey]) -> Vec<(Vec<usize>, Vec<usize>)> {
    let set_of = |key: &CellKey| -> Vec<bool> { key.iter().map(Option::is_some).collect() };
    let sets: BTreeSet<Vec<bool>> = keys.iter().map(set_of).collect();
    let sets: Vec<Vec<bool>> = sets.into_iter().collect();
    let mut relations = Vec::new();
    for (i, a) in sets.iter().enumerate() {
        for b in &sets[i + 1..] {
            let common: Vec<bool> = a.iter().zip(b).map(|(x, y)| *x && *y).collect();
            let mut sides: HashMap<CellKey, Sides> = HashMap::new();
            for (cell, key) in keys.iter().enumerate() {
                let set = set_of(key);
                if set != *a && set != *b {
                    continue;
                }
                let projected: Vec<Option<String>> = key
                    .iter()
                    .zip(&common)
                    .map(|(v, keep)| if *keep { v.clone() } else { None })
                    .collect();
                let entry = sides.entry(projected).or_default();
                if set == *a {
                    entry.0.push(cell);
                } else {
                    entry.1.push(cell);
                }
            }
            relations.extend(sides.into_values());
        }
    }
    relations
}

/// The range an attacker can derive for hidden cell `cell`: `values` holds
/// every cell's true value, `released` which of them the attacker sees.
/// Values are not negative. `None` when the released values are not
/// consistent with the relations (a released value is wrong).
pub fn range(
    values: &[f64],
    released: &[bool],
    relations: &[(Vec<usize>, Vec<usize>)],
    cell: usize,
) -> Option<(f64, f64)> {
    let solve = |direction| {
        let mut problem = Problem::new(direction);
        let variables: HashMap<usize, microlp::Variable> = (0..values.len())
            .filter(|i| !released[*i])
            .map(|i| {
                (
                    i,
                    problem.add_var(if i == cell { 1.0 } else { 0.0 }, (0.0, f64::INFINITY)),
                )
            })
            .collect();
        for (plus, minus) in relations {
            let mut terms = Vec::new();
            let mut constant = 0.0;
            for (member, sign) in plus
                .iter()
                .map(|c| (*c, 1.0))
                .chain(minus.iter().map(|c| (*c, -1.0)))
            {
                match variables.get(&member) {
                    Some(v) => terms.push((*v, sign)),
                    None => constant += sign * values[member],
                }
            }
            if !terms.is_empty() {
                problem.add_constraint(&terms, ComparisonOp::Eq, -constant);
            }
        }
        problem
            .solve()
            .ok()
            .and_then(|outcome| outcome.into_solution().ok())
            .map(|solution| solution.objective())
    };
    let low = solve(OptimizationDirection::Minimize)?;
    let high = solve(OptimizationDirection::Maximize).unwrap_or(f64::INFINITY);
    Some((low, high))
}

/// True when the range leaves `value` at least `protection` (a fraction)
/// of itself on both sides.
pub fn protects(range: (f64, f64), value: f64, protection: f64) -> bool {
    let margin = value.abs() * protection;
    let slack = 1e-6 * value.abs().max(1.0);
    range.0 <= value - margin + slack && range.1 >= value + margin - slack
}
