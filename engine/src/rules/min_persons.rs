//! Rule 2, persons, not rows, are counted.
//!
//! > Every released cell must cover at least `k` distinct persons (policy
//! > `min_persons`, default 11). Count persons through the person id, even
//! > when a query never mentions it, even after joins that repeat rows, and
//! > even when one person holds several source ids. `HAVING` in the user's
//! > query cannot lower the threshold. The rule holds per released value,
//! > not only per cell: each value is computed from at least `k` distinct
//! > persons who actually contribute a non-NULL input to it (after its
//! > `FILTER`, its `CASE`, the NULLs that `count(col)` skips); a value that
//! > fails is suppressed even when the rest of its cell is released.
//!
//! The released aggregate (an aggregate over private rows that is not per
//! person, [`crate::cells::step`]) gains columns that count, per cell, its distinct persons and the
//! persons who contribute to each value ([`crate::cells`];
//! [`crate::cells::measures::Value::contributing_rows`] says which rows
//! contribute). `COUNT(DISTINCT x)` of anything but a person key is refused:
//! it counts values, and a value may be held by a single person. Its cells
//! are computed first, where the data lives, and go through the release step
//! ([`crate::release`]) before anything the user wrote above the aggregate
//! (`HAVING`, `ORDER BY`, `LIMIT`, joins with code lists) sees them: in the
//! rest of the plan the aggregate is replaced by a scan of the released cells.

use seuil_policies::Role;

/// Whether a cell or a value of `persons` distinct (contributing) persons
/// may be released to `role`. An unknown count (NULL: no row contributed)
/// is zero persons.
pub fn enough_persons(persons: Option<i64>, role: &Role) -> bool {
    persons.unwrap_or(0) >= i64::from(role.min_persons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_needs_min_persons_and_no_count_is_zero() {
        let policy = seuil_policies::load(
            &seuil_policies::PolicySource::new("snds.toml", seuil_policies::SNDS_POLICY),
            None,
        )
        .expect("the shipped policy loads")
        .0;
        let role = &policy.roles["researcher"];
        let k = i64::from(role.min_persons);
        assert!(enough_persons(Some(k), role));
        assert!(!enough_persons(Some(k - 1), role));
        assert!(!enough_persons(Some(0), role));
        assert!(!enough_persons(None, role));
    }
}
