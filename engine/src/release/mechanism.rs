//! The seam between the cells plan and what leaves: a release mechanism.
//!
//! A role's mode chooses one ([`super::mechanism_for`]). The mechanism says
//! what the cells plan of each released aggregate must compute besides the
//! user's values ([`CellsNeeds`]), and, once the cells are computed, decides
//! what may leave: it stores the released cells where the rest of the plan
//! reads them and records what it withheld. Threshold mode
//! ([`super::Threshold`]) is the first; a new mode is a new implementation,
//! with no edit to the others.

use std::fmt::Debug;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;

use super::report::{DpRelease, ReleaseReport};
use crate::cancellation::Cancellation;
use crate::cells::{CellsNeeds, ReleaseStep};
use crate::error::EngineError;

/// How the cells of released aggregates are released.
pub trait ReleaseMechanism: Debug + Send + Sync {
    /// What each released aggregate's cells plan computes for this
    /// mechanism, besides the user's values.
    fn cells_needs(&self) -> CellsNeeds;

    /// What the query whose released aggregates are `steps` costs in
    /// privacy budget, with every parameter of its noise: known from the
    /// policy and the query's shape, before any data is read, and charged
    /// by the engine before the cells are computed. `None` for a mechanism
    /// that spends no budget.
    fn cost(&self, _steps: &[ReleaseStep]) -> Result<Option<DpRelease>, EngineError> {
        Ok(None)
    }

    /// Releases the computed cells of a group of released aggregates (one
    /// aggregate, or several of the query over the same rows, which are one
    /// table with margins): `computed[i]` holds the cells of `steps[i]`.
    /// Stores what may leave in each step's released cells, counts what it
    /// released and withheld in `report`, and stops early, with an error,
    /// once `cancellation` is set. Returns the time spent protecting
    /// margins.
    fn release(
        &self,
        steps: &[&ReleaseStep],
        computed: Vec<Vec<RecordBatch>>,
        report: &mut ReleaseReport,
        cancellation: &Cancellation,
    ) -> Result<Duration, EngineError>;
}
