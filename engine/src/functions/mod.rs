//! seuil's own aggregate functions: what the cells plan computes that
//! DataFusion's built-in aggregates do not, each exact and independent of
//! partitions, batches and threads, so that a released value does not
//! depend on where or how the plan ran.
//!
//! - [`persons_up_to`](mod@persons_up_to): a cell's distinct persons, counted up to the
//!   threshold (rule 2);
//! - [`nth_largest`](mod@nth_largest): a cell's largest per-person contributions, for the
//!   dominance rules (rule 6);
//! - [`exact_sum`](mod@exact_sum): float sums that do not depend on row order;
//! - [`person_sums`](mod@person_sums): sums of sensitive columns clamped per
//!   person, and their largest contributions, without a per-person level
//!   (rule 6);
//! - [`contribution_choice`](mod@contribution_choice): the keyed hash by
//!   which dp mode chooses a person's cells (a scalar function, registered
//!   with the engine's key by the session).
//!
//! [`KnownAggregate`] names DataFusion's own aggregates as the rules tell
//! them apart.
//!
//! Every session the engine builds registers them ([`register`]), so that a
//! cells plan can be resolved by name wherever it is planned or decoded
//! (a data node receiving a serialised plan, for one). A new function goes
//! in a module of its own here, with its builder and its unit tests, and
//! one line in [`all`].

pub mod contribution_choice;
pub mod exact_sum;
pub mod known;
mod literal_argument;
pub mod nth_largest;
pub mod person_sums;
pub mod persons_up_to;

use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;

pub use contribution_choice::{ContributionChoice, contribution_choice};
pub use exact_sum::{ExactSum, exact_float_sum, exact_sum};
pub use known::KnownAggregate;
pub use nth_largest::{NthLargest, nth_largest};
pub use person_sums::{PersonSums, person_sums};
pub use persons_up_to::{PersonsUpTo, persons_up_to};

/// Every aggregate function of seuil's, as DataFusion registers them.
pub fn all() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(PersonsUpTo::new()),
        AggregateUDF::from(NthLargest::new()),
        AggregateUDF::from(ExactSum::new()),
        AggregateUDF::from(PersonSums::default()),
    ]
}

/// Registers seuil's aggregate functions in a session.
pub fn register(ctx: &SessionContext) {
    for function in all() {
        ctx.register_udaf(function);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::FunctionRegistry;

    use super::*;

    #[test]
    fn every_function_resolves_by_name_in_a_registered_session() {
        let ctx = SessionContext::new();
        register(&ctx);
        for name in [
            "seuil_persons_up_to",
            "seuil_nth_largest",
            "seuil_exact_sum",
        ] {
            assert!(ctx.udaf(name).is_ok(), "{name} is not registered");
        }
    }
}
