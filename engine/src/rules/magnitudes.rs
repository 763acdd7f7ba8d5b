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
//!   rules, over the persons who contribute to each sum.
