//! What an engine is opened with: its limits and resources, and where its
//! person index lives. Read by every module that builds a session; it
//! imports nothing of the engine but the limits' own types.

use std::path::PathBuf;

use crate::limits;

/// Limits and resources of an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory for query execution; beyond it, operators spill to disk or the
    /// query fails with a limit error. `None` for no limit.
    pub memory_limit_bytes: Option<usize>,
    /// Parallelism of each query; the number of cores when `None`.
    pub target_partitions: Option<usize>,
    /// Longest SQL text accepted, in bytes.
    pub max_sql_bytes: usize,
    /// Deepest nesting of the SQL accepted (parser recursion).
    pub max_nesting: usize,
    /// The size of a query accepted, checked before planning.
    pub limits: limits::QueryLimits,
    /// Most cells one released aggregate may have (they are held in memory
    /// for the release step).
    pub max_cells: usize,
    /// Where the person index is kept ([`crate::person_index`]).
    pub person_index: PersonIndexSetting,
    /// The secret by which dp mode chooses the cells of a person in more
    /// cells than its bound ([`crate::functions::contribution_choice`]).
    pub contribution_key: ContributionKey,
    /// A deliberate weakening of dp mode, for mutation tests only.
    #[doc(hidden)]
    pub dp_mutation: DpMutation,
}

/// A deliberate weakening of dp mode that the tests of calibration and
/// bounding must catch (`tests/tests/dp.rs`): set by those tests only, never
/// by the server, the CLI or a configuration.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DpMutation {
    /// dp mode as it is.
    #[default]
    None,
    /// Noise drawn at half the scale the metadata reports.
    HalveNoise,
    /// No bound on the cells a person counts in.
    LiftGroupBound,
}

/// A secret key of the deployment, for dp mode's choice of a person's cells:
/// random unless the operator gives one, so that a querier can neither know
/// nor set it.
#[derive(Clone, PartialEq, Eq)]
pub struct ContributionKey([u8; 32]);

impl ContributionKey {
    /// A key from its bytes (derived from a deployment secret).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The key's bytes.
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl std::fmt::Debug for ContributionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContributionKey(..)")
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            memory_limit_bytes: None,
            target_partitions: None,
            max_sql_bytes: 100_000,
            max_nesting: 64,
            limits: limits::QueryLimits::default(),
            max_cells: 1_000_000,
            person_index: PersonIndexSetting::default(),
            contribution_key: ContributionKey::random(),
            dp_mutation: DpMutation::None,
        }
    }
}

/// Where the engine keeps its person index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PersonIndexSetting {
    /// In `.seuil-index` inside the data folder.
    #[default]
    InDataFolder,
    /// In this folder (for a read-only data folder).
    Folder(PathBuf),
    /// No index: every scan joins along the policy's path.
    Off,
}
