//! Rule 6, magnitudes are protected too.
//!
//! > `SUM` and `AVG` of sensitive measures apply the dominance rule (policy
//! > `dominance = { n = 2, k = 85 }`: suppress a cell when its n largest
//! > persons hold more than k% of its total) and clamp each person's
//! > contribution to the column's `bounds`, over the persons who contribute
//! > to that value. `MIN`, `MAX`, `MEDIAN` and other order statistics of any
//! > private column (sensitive or not: a latest death date is one person's)
//! > are refused unless the policy allows them, and then leave out the
//! > `exclude` most extreme persons.
//!
//! The rule acts in three places:
//!
//! - resolving a released aggregate's values
//!   ([`crate::cells::measures::resolve`]): sums of expressions of sensitive
//!   columns (no bounds to clamp to) and other statistics of sensitive
//!   columns are refused; order statistics of any private column (also
//!   `BOOL_AND` and `BOOL_OR`, the minimum and maximum of booleans) are
//!   refused unless the role allows them;
//! - the cells plan ([`crate::cells`]): each person's sum of a sensitive
//!   column in a cell is clamped to its bounds, and order statistics are
//!   taken over persons' values with the `exclude` largest (or smallest)
//!   persons left out, so no single person's value is released;
//! - the release step ([`crate::release`]): the (n, k) and p% dominance
//!   rules ([`dominated`]), over the persons who contribute to each sum.

use datafusion::logical_expr::Expr;
use seuil_policies::Role;

use crate::functions::KnownAggregate;
use crate::lineage::{PersonLineage, expr_sensitivity};

/// Whether a sum whose per-person contributions total `total` and whose
/// largest contributions are `largest` (largest first, absolute values) is
/// dominated under `role`'s rules, and so must not be released:
///
/// - (n, k): its `n` largest persons hold more than `k`% of the total;
/// - p%: the second largest person, who knows its own share and the total,
///   would estimate the largest one's to within `p`% (the rest of the cell
///   is less than `p`% of the largest contribution).
///
/// A sum of no contributions (total 0) is not dominated: there is nothing
/// to estimate.
pub fn dominated(total: f64, largest: &[f64], role: &Role) -> bool {
    if total <= 0.0 {
        return false;
    }
    let by_n_k = role.dominance.is_some_and(|rule| {
        let n = (rule.n as usize).min(largest.len());
        largest[..n].iter().sum::<f64>() > rule.k / 100.0 * total
    });
    let by_p_percent = role.p_percent.is_some_and(|p| {
        let first = largest.first().copied().unwrap_or(0.0);
        let second = largest.get(1).copied().unwrap_or(0.0);
        total - first - second < p / 100.0 * first
    });
    by_n_k || by_p_percent
}

/// The sensitivity of a per-person aggregate's output: a person's sum,
/// average, minimum, maximum or median of a bounded magnitude keeps its
/// bounds (they bound a person's contribution in a cell); counts carry no
/// magnitude; anything else computed from a magnitude has no bounds.
pub fn per_person_sensitivity(expr: &Expr, lineage: &PersonLineage) -> Option<Option<(f64, f64)>> {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    if let Expr::AggregateFunction(function) = inner {
        let known = KnownAggregate::of(function);
        if known == KnownAggregate::Count {
            return None;
        }
        if let [argument] = function.params.args.as_slice()
            && matches!(
                known,
                KnownAggregate::Sum
                    | KnownAggregate::Avg
                    | KnownAggregate::Min
                    | KnownAggregate::Max
                    | KnownAggregate::Median
            )
        {
            return expr_sensitivity(argument, lineage);
        }
    }
    expr_sensitivity(inner, lineage).map(|_| None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seuil_policies::{Dominance, Policy, PolicySource, SNDS_POLICY};

    fn role(dominance: Option<Dominance>, p_percent: Option<f64>) -> Role {
        let policy: Policy =
            seuil_policies::load(&PolicySource::new("snds.toml", SNDS_POLICY), None)
                .expect("the shipped policy loads")
                .0;
        let mut role = policy.roles["researcher"].clone();
        role.dominance = dominance;
        role.p_percent = p_percent;
        role
    }

    #[test]
    fn n_k_rule_compares_the_n_largest_with_k_percent_of_the_total() {
        let role = role(Some(Dominance { n: 2, k: 85.0 }), None);
        assert!(dominated(100.0, &[80.0, 6.0], &role));
        assert!(!dominated(100.0, &[80.0, 5.0], &role));
        assert!(!dominated(0.0, &[], &role));
    }

    #[test]
    fn p_percent_rule_bounds_what_the_second_largest_learns() {
        let role = role(None, Some(10.0));
        // The rest (100 - 60 - 35 = 5) is under 10% of 60: dominated.
        assert!(dominated(100.0, &[60.0, 35.0], &role));
        // The rest (100 - 50 - 20 = 30) hides the largest well enough.
        assert!(!dominated(100.0, &[50.0, 20.0], &role));
    }
}
