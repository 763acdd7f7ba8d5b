//! The release step: from the computed cells of the released aggregates to
//! the cells that may leave, and the report of what was suppressed and why.
//!
//! It runs on the coordinator, on the final cells, before anything the user
//! wrote above an aggregate sees them, in this order:
//!
//! 1. primary suppression of cells: cells of fewer than `min_persons`
//!    persons (rule 2), and cells of a sensitive sum dominated by their
//!    largest persons, by the (n, k) rule or the p% rule (rule 6);
//! 2. primary suppression of values: in a released cell, a value computed
//!    from fewer than `min_persons` contributing persons is NULL (rule 2,
//!    read per value);
//! 3. secondary suppression, for tables with margins (rule 7): the cells of
//!    one aggregate's grouping sets, and the cells of several aggregates of
//!    the query over the same rows ([`crate::rules::margins::MarginShape`]),
//!    protected together;
//! 4. rounding of every released value, if the role asks for it, after
//!    suppression and never before, so that rounding cannot release a cell.
//!
//! That is threshold mode ([`Threshold`]); dp mode ([`Dp`]) releases noisy
//! cells instead, chosen by private partition selection.
//!
//! What the client learns ([`ReleaseReport::metadata`]) never tells a cell
//! of 0 persons from one of 1 to `min_persons - 1`: suppressed cells are
//! not counted there. The report's own fields keep the full detail, for the
//! audit log that only the operator reads.

mod dp;
mod fields;
mod groups;
mod mechanism;
mod report;
mod threshold;

use std::sync::Arc;

use seuil_policies::{Mode, Role};

use crate::error::EngineError;
use crate::options::EngineOptions;

pub use dp::Dp;
pub use fields::{name_noisy_values, noisy_fields, with_field_metadata};
pub use groups::release_groups;
pub use mechanism::ReleaseMechanism;
pub use report::{
    DpRelease, NodeTraffic, NoisyField, ReleaseReport, Selection, SuppressedCell, SuppressionReason,
};
pub use threshold::Threshold;

/// The release mechanism of `role`'s mode; dp mode chooses persons' cells
/// under the options' contribution key.
pub fn mechanism_for(
    role: &Role,
    options: &EngineOptions,
) -> Result<Arc<dyn ReleaseMechanism>, EngineError> {
    match role.mode {
        Mode::Threshold => Ok(Arc::new(Threshold::new(role.clone()))),
        Mode::Dp => Ok(Arc::new(Dp::new(
            role.clone(),
            options.contribution_key.clone(),
            options.dp_mutation,
        )?)),
    }
}
