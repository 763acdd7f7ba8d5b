//! The rules of the privacy contract (DESIGN.md §2), one module each, named
//! after what it enforces. Each module's documentation quotes its rule.

pub mod aggregates_only;
pub mod identifiers;
pub mod magnitudes;
pub mod margins;
pub mod min_persons;
pub mod person_lineage;
pub mod read_only;
pub mod scopes;
pub mod side_channels;
