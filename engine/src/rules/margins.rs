//! Rule 7, margins must not give cells back.
//!
//! > When one result has totals and subtotals (`ROLLUP`, `CUBE`,
//! > `GROUPING SETS`), suppress enough extra cells (secondary suppression)
//! > that no suppressed cell can be computed from what is released.
//!
//! A table with margins satisfies linear relations: each total equals the sum
//! of the cells one dimension finer. An attacker who knows the released
//! cells and these relations can bound every suppressed cell by solving two
//! linear programs (its smallest and largest value), as sdcTable's
//! `attack()` does. A cell suppressed by a primary rule (persons, dominance)
//! is protected when that range reaches at least `protection_percent` of its
//! value below and above it. Cells hidden by secondary suppression are safe
//! cells: as in sdcTable, they need no protection of their own.
//!
//! The suppression method is a heuristic: first no relation may hold a
//! single suppressed cell (else it is its total minus the released ones);
//! then the audit runs, and while a suppressed cell is not protected, the
//! smallest released cell of one of its relations is suppressed too. The
//! audit, not the heuristic, decides when the table is safe. When the audit
//! cannot be completed within its budget, every cell of the table is
//! suppressed rather than risk releasing a derivable one.

use std::collections::HashMap;

use datafusion::scalar::ScalarValue;
use microlp::{ComparisonOp, OptimizationDirection, Problem};

/// The cells of one released aggregate, as margins see them.
#[derive(Debug, Clone)]
pub struct MarginTable {
    /// Group values of each cell (one per group expression).
    pub keys: Vec<Vec<ScalarValue>>,
    /// Per cell, the bit mask of group expressions the cell aggregates over
    /// (bit 0 is the last expression), as DataFusion's grouping id has it.
    pub masks: Vec<u64>,
    /// Values of each additive measure, per cell.
    pub measures: Vec<Vec<f64>>,
    /// Whether each measure's values cannot be negative.
    pub non_negative: Vec<bool>,
}

/// One relation: `parent` equals the sum of `children`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The total.
    pub parent: usize,
    /// The cells it sums.
    pub children: Vec<usize>,
}

/// The linear relations of a table with margins: each cell whose set leaves
/// out a group expression that a finer set includes is the sum of that finer
/// set's cells with the same other values.
pub fn relations(table: &MarginTable, dimensions: usize) -> Vec<Relation> {
    let index: HashMap<(u64, &[ScalarValue]), usize> = table
        .masks
        .iter()
        .zip(&table.keys)
        .enumerate()
        .map(|(i, (mask, key))| ((*mask, key.as_slice()), i))
        .collect();
    let mut children: HashMap<(usize, u32), Vec<usize>> = HashMap::new();
    for (child, (mask, key)) in table.masks.iter().zip(&table.keys).enumerate() {
        for bit in 0..dimensions as u32 {
            if mask & (1 << bit) != 0 {
                continue; // the child does not include this dimension
            }
            let parent_mask = mask | (1 << bit);
            let position = dimensions - 1 - bit as usize;
            let mut parent_key = key.clone();
            // In the parent's rows the left-out dimension is NULL.
            parent_key[position] =
                ScalarValue::try_from(&key[position].data_type()).unwrap_or(ScalarValue::Null);
            if let Some(&parent) = index.get(&(parent_mask, parent_key.as_slice())) {
                children.entry((parent, bit)).or_default().push(child);
            }
        }
    }
    let mut relations: Vec<Relation> = children
        .into_iter()
        .map(|((parent, _), mut children)| {
            children.sort_unstable();
            Relation { parent, children }
        })
        .collect();
    relations.sort_by(|a, b| (a.parent, &a.children).cmp(&(b.parent, &b.children)));
    relations
}

/// The range of values of `cell` that an attacker can derive, for one
/// measure, from the released cells and the relations; `None` when the
/// linear programs could not be solved.
pub fn attack(
    table: &MarginTable,
    relations: &[Relation],
    suppressed: &[bool],
    measure: usize,
    cell: usize,
) -> Option<(f64, f64)> {
    let values = &table.measures[measure];
    let lower_bound = if table.non_negative[measure] {
        0.0
    } else {
        f64::NEG_INFINITY
    };
    let solve = |direction| -> Option<f64> {
        let mut problem = Problem::new(direction);
        let variables: HashMap<usize, microlp::Variable> = suppressed
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(i, _)| {
                let objective = if i == cell { 1.0 } else { 0.0 };
                (i, problem.add_var(objective, (lower_bound, f64::INFINITY)))
            })
            .collect();
        for relation in relations {
            let members = std::iter::once((relation.parent, -1.0))
                .chain(relation.children.iter().map(|&c| (c, 1.0)));
            let mut terms = Vec::new();
            let mut constant = 0.0;
            for (member, sign) in members {
                match variables.get(&member) {
                    Some(&variable) => terms.push((variable, sign)),
                    None => constant += sign * values[member],
                }
            }
            if terms.is_empty() {
                continue;
            }
            problem.add_constraint(&terms, ComparisonOp::Eq, -constant);
        }
        let solution = problem.solve().ok()?.into_solution().ok()?;
        Some(solution.objective())
    };
    let low = solve(OptimizationDirection::Minimize)?;
    // An unbounded maximum is the best protection there is.
    let high = solve(OptimizationDirection::Maximize).unwrap_or(f64::INFINITY);
    Some((low, high))
}

/// True when the attacker's range around `value` is wide enough.
pub fn is_protected(range: (f64, f64), value: f64, protection_percent: f64) -> bool {
    let margin = value.abs() * protection_percent / 100.0;
    // A tolerance for the solver's round-off.
    let slack = 1e-6 * value.abs().max(1.0);
    range.0 <= value - margin + slack && range.1 >= value + margin - slack
}

/// How many linear programs one table may cost before it is suppressed whole.
const AUDIT_BUDGET: usize = 20_000;

/// Chooses the secondary suppressions of a table given its primary ones:
/// returns the cells to suppress in addition. Every suppressed cell passes
/// the attacker's audit afterwards, or the whole table is suppressed.
pub fn secondary_suppression(
    table: &MarginTable,
    dimensions: usize,
    primary: &[bool],
    protection_percent: f64,
) -> Vec<usize> {
    let cells = primary.len();
    let relations = relations(table, dimensions);
    let mut suppressed = primary.to_vec();
    if relations.is_empty() || !suppressed.iter().any(|s| *s) {
        return Vec::new();
    }
    let size = |cell: usize| table.measures.first().map_or(0.0, |m| m[cell].abs());
    let mut budget = AUDIT_BUDGET;
    'pattern: loop {
        // No relation may hold exactly one suppressed cell.
        let mut changed = true;
        while changed {
            changed = false;
            for relation in &relations {
                let members: Vec<usize> = std::iter::once(relation.parent)
                    .chain(relation.children.iter().copied())
                    .collect();
                let hidden = members.iter().filter(|m| suppressed[**m]).count();
                if hidden == 1 {
                    let cheapest = members
                        .iter()
                        .copied()
                        .filter(|m| !suppressed[*m])
                        .min_by(|a, b| size(*a).total_cmp(&size(*b)).then(a.cmp(b)));
                    if let Some(cell) = cheapest {
                        suppressed[cell] = true;
                        changed = true;
                    }
                }
            }
        }
        // The audit: every primary suppression must be protected for every
        // measure. (Secondary cells are safe cells, hidden only to protect
        // the primary ones; an attacker may compute them.)
        for (cell, _) in primary.iter().enumerate().filter(|(_, p)| **p) {
            for measure in 0..table.measures.len() {
                if budget < 2 {
                    suppressed.iter_mut().for_each(|s| *s = true);
                    break 'pattern;
                }
                budget -= 2;
                let value = table.measures[measure][cell];
                let protected = attack(table, &relations, &suppressed, measure, cell)
                    .is_some_and(|range| is_protected(range, value, protection_percent));
                if protected {
                    continue;
                }
                // Widen the range: hide the smallest released cell of one of
                // the cell's relations.
                let candidate = relations
                    .iter()
                    .filter(|r| r.parent == cell || r.children.contains(&cell))
                    .flat_map(|r| std::iter::once(r.parent).chain(r.children.iter().copied()))
                    .filter(|m| !suppressed[*m])
                    .min_by(|a, b| size(*a).total_cmp(&size(*b)).then(a.cmp(b)));
                match candidate {
                    Some(next) => {
                        suppressed[next] = true;
                        continue 'pattern;
                    }
                    None => continue, // nothing left to hide around this cell
                }
            }
        }
        break;
    }
    (0..cells)
        .filter(|&c| suppressed[c] && !primary[c])
        .collect()
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
                measure.push(values[i][j]);
            }
            keys.push(vec![text(*r), text(None)]);
            masks.push(0b01);
            measure.push(values[i].iter().sum());
        }
        for (j, c) in columns.iter().enumerate() {
            keys.push(vec![text(None), text(*c)]);
            masks.push(0b10);
            measure.push(values[0][j] + values[1][j]);
        }
        keys.push(vec![text(None), text(None)]);
        masks.push(0b11);
        measure.push(values.iter().flatten().sum());
        MarginTable {
            keys,
            masks,
            measures: vec![measure],
            non_negative: vec![true],
        }
    }

    #[test]
    fn relations_of_a_cube() {
        let table = cube([[10.0, 20.0], [30.0, 40.0]]);
        // Cells: 0 (r1,c1) 1 (r1,c2) 2 (r1,*) 3 (r2,c1) 4 (r2,c2) 5 (r2,*)
        // 6 (*,c1) 7 (*,c2) 8 (*,*)
        let relations = relations(&table, 2);
        assert!(relations.contains(&Relation {
            parent: 2,
            children: vec![0, 1]
        }));
        assert!(relations.contains(&Relation {
            parent: 6,
            children: vec![0, 3]
        }));
        assert!(relations.contains(&Relation {
            parent: 8,
            children: vec![2, 5]
        }));
        assert!(relations.contains(&Relation {
            parent: 8,
            children: vec![6, 7]
        }));
        assert_eq!(relations.len(), 6);
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
        let secondary = secondary_suppression(&table, 2, &primary, 10.0);
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
                    is_protected(range, table.measures[0][cell], 10.0),
                    "cell {cell}: {range:?}"
                );
            }
        }
    }

    #[test]
    fn nothing_to_do_without_primary_suppression() {
        let table = cube([[13.0, 20.0], [30.0, 40.0]]);
        assert!(secondary_suppression(&table, 2, &[false; 9], 10.0).is_empty());
    }
}
