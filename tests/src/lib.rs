//! # seuil-tests: shared support for seuil's end-to-end tests
//!
//! The tests themselves are under `tests/tests/`: the sqllogictest files of
//! `tests/slt/` (one per rule of the privacy contract), the property tests
//! that check released cells against the raw data, and the end-to-end tests
//! of the server with real clients. This library holds what they share: the
//! synthetic data they run on ([`test_data`]), an engine on the shipped
//! policy ([`open_engine`]), and the sqllogictest adapter ([`SltDb`]).

// Support code of tests: an oracle that cannot run must stop the test,
// loudly, with what it was doing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod attacker;
pub mod grammar;
pub mod neighbours;
pub mod oracle;
pub mod reference;
pub mod slt;

use std::path::Path;

use seuil_engine::{Engine, EngineOptions};
use seuil_policies::PolicySource;

pub use slt::SltDb;

/// Persons of the data the sqllogictest files were written against.
pub const SLT_PERSONS: u64 = 3_000;
/// Seed of that data.
pub const SLT_SEED: u64 = 11;

/// A freshly generated synthetic SNDS in a temporary folder, removed when
/// dropped. Generated per test process: a few thousand persons take well
/// under a second, and a cache could outlive a change of the generator.
pub struct TestData {
    dir: tempfile::TempDir,
}

impl TestData {
    /// The folder of Parquet tables.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Generates the synthetic SNDS of `persons` persons with `seed`.
pub fn test_data(persons: u64, seed: u64) -> TestData {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = seuil_synth::GenConfig {
        persons,
        seed,
        out_dir: dir.path().to_path_buf(),
    };
    seuil_synth::generate(&config, &|_| {}).expect("generating test data");
    TestData { dir }
}

/// The shipped policy with its dp role's budgets lifted, for tests that run
/// many dp queries (each query still costs its ε).
pub fn unlimited_dp_policy() -> String {
    let text = seuil_policies::SNDS_POLICY
        .replace("epsilon_budget = 10.0", "epsilon_budget = 1e9")
        .replace(
            "project_epsilon_budget = 100.0",
            "project_epsilon_budget = 1e10",
        )
        .replace("delta_budget = 1e-6", "delta_budget = 0.5");
    assert_ne!(
        text,
        seuil_policies::SNDS_POLICY,
        "the shipped policy changed shape"
    );
    text
}

/// An engine on [`unlimited_dp_policy`], charging a ledger in memory.
pub async fn open_dp_engine(data: &Path) -> Engine {
    let source = PolicySource::new(
        "policies/snds.toml (unlimited dp budgets)",
        unlimited_dp_policy(),
    );
    let (engine, _) = Engine::open_files(&source, data, EngineOptions::default())
        .await
        .expect("opening the engine");
    let ledger = seuil_engine::budget::BudgetLedger::in_memory().expect("a ledger in memory");
    engine.with_budget(std::sync::Arc::new(ledger))
}

/// A hand-made fixture of `tests/slt/fixtures/NAME/`: its `policy.toml`,
/// and its tables as CSV files, written as Parquet into a temporary folder.
pub async fn fixture_engine(name: &str) -> (Engine, tempfile::TempDir) {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("slt/fixtures")
        .join(name);
    let out = tempfile::tempdir().expect("temporary folder");
    let ctx = datafusion::prelude::SessionContext::new();
    for entry in std::fs::read_dir(&dir).expect("fixture folder").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "csv") {
            let table = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("table name");
            let frame = ctx
                .read_csv(path.to_str().expect("utf-8 path"), Default::default())
                .await
                .expect("reading a fixture table");
            let target = out.path().join(format!("{table}.parquet"));
            frame
                .write_parquet(
                    target.to_str().expect("utf-8 path"),
                    datafusion::dataframe::DataFrameWriteOptions::new()
                        .with_single_file_output(true),
                    None,
                )
                .await
                .expect("writing a fixture table");
        }
    }
    let policy = PolicySource::read(&dir.join("policy.toml")).expect("fixture policy");
    let (engine, _) = Engine::open_files(&policy, out.path(), EngineOptions::default())
        .await
        .unwrap_or_else(|e| panic!("opening the fixture {name}: {e}"));
    (engine, out)
}

/// An engine on the shipped policy over `data`.
pub async fn open_engine(data: &Path) -> Engine {
    let source = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let (engine, _) = Engine::open_files(&source, data, EngineOptions::default())
        .await
        .expect("opening the engine");
    engine
}
