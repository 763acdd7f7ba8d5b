//! The keyed tables of a data folder: each private table's copy with the
//! number of its rows' person, as the person index ([`crate::person_index`])
//! built or found them. The catalog holds them; the person lineage rule reads
//! them; only the person index writes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::TableProvider;

/// The keyed copies of the private tables, for one data folder and one
/// policy lineage.
#[derive(Debug, Clone)]
pub struct PersonIndex {
    pub(crate) folder: PathBuf,
    /// A digest of the policy's person and paths the index was built for.
    pub(crate) lineage: String,
    pub(crate) tables: BTreeMap<String, Arc<dyn TableProvider>>,
    pub(crate) opening: IndexOpening,
}

/// What opening the index did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOpening {
    /// An index of the same data and lineage was there already.
    Reused,
    /// The index was built now, in this time.
    Built(Duration),
}

impl PersonIndex {
    /// The keyed copy of private table `table`.
    pub fn table(&self, table: &str) -> Option<&Arc<dyn TableProvider>> {
        self.tables.get(table)
    }

    /// Whether opening found the index or built it.
    pub fn opening(&self) -> &IndexOpening {
        &self.opening
    }

    /// The folder the keyed tables are read from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }
}
