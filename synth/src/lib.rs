//! A seeded, streaming generator of a synthetic French SNDS health-claims database.
//!
//! seuil needs data that looks like the real SNDS (DESIGN.md §4) for its demo, its end-to-end
//! tests and its benchmarks, and none of them may depend on another to get it: this crate is that
//! one source. [`generate`] writes one Parquet file per table of [`TABLES`] into a directory,
//! with the exact Arrow schemas returned by [`table_schemas`]:
//!
//! - `ir_ben_r`: beneficiaries, one row per source id `ben_nir_psa`; `ben_nir_ano` is the person
//!   (about 5% of persons have two source ids);
//! - `er_prs_f`, `er_pha_f`, `ir_imb_r`: outpatient claims, pharmacy dispensings and long-term
//!   illnesses (ALD), linked through `ben_nir_psa`;
//! - `t_mco_c`, `t_mco_b`: hospital stays, linked through `nir_ano_17` = `ben_nir_psa`;
//! - `ref_cim10`, `ref_atc`, `ref_dpt`: public code lists with real labels.
//!
//! The data is built to exercise a disclosure-control engine: an age pyramid like France's,
//! all 101 départements with skewed populations, Zipf-sized communes, Zipf-distributed
//! diagnoses and drugs, and heavy-tailed care use, so that small cells (rare diagnoses, small
//! communes, old ages) occur naturally next to large ones.
//!
//! # Shape of a run
//!
//! Persons are generated in fixed-size chunks. Each chunk draws from its own ChaCha stream keyed
//! by `(seed, chunk index)`, is built as one Arrow record batch per table on a worker thread, and
//! is appended by the calling thread, in chunk order, to one open Parquet writer per table. Memory
//! therefore stays flat whatever the number of persons, and the same `(persons, seed)` gives
//! byte-identical files however many threads ran. Identifiers are keyed bijections of global
//! counters, so they are unique without any coordination between chunks. Files are written under
//! temporary names and renamed only once all of them are complete.
//!
//! # Example
//!
//! ```no_run
//! use seuil_synth::{GenConfig, generate};
//!
//! let config = GenConfig { persons: 100_000, seed: 42, out_dir: "data/snds".into() };
//! let summary = generate(&config, &|done| eprintln!("{done} persons"))?;
//! for table in &summary.tables {
//!     println!("{}: {} rows in {}", table.name, table.rows, table.path.display());
//! }
//! # Ok::<(), seuil_synth::SynthError>(())
//! ```

mod calendar;
mod chunk;
mod claims;
mod codes;
mod error;
mod hospital;
mod ids;
mod layout;
mod model;
mod pipeline;
mod population;
mod reference;
mod rows;
mod sampling;
mod schema;
mod writer;

use std::path::PathBuf;

use datafusion::arrow::datatypes::SchemaRef;

pub use error::SynthError;
pub use layout::{FEDERATED_NODES, PUBLIC_TABLES, generate_federated};

/// What to generate and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    /// Number of persons (distinct `ben_nir_ano`). Zero is allowed and gives empty private tables.
    pub persons: u64,
    /// Seed of every random draw and identifier: the same `(persons, seed)` gives the same bytes.
    pub seed: u64,
    /// Directory receiving `<table>.parquet`; created if missing.
    pub out_dir: PathBuf,
}

/// What a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenSummary {
    /// One entry per table, in the order of [`TABLES`].
    pub tables: Vec<TableSummary>,
}

/// One written table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// Table name, one of [`TABLES`].
    pub name: &'static str,
    /// Number of rows written.
    pub rows: u64,
    /// Path of the Parquet file.
    pub path: PathBuf,
}

/// The tables, in the order of [`GenSummary::tables`] and [`table_schemas`]: the six private
/// tables first, then the three public code lists.
pub const TABLES: [&str; 9] = [
    "ir_ben_r",
    "er_prs_f",
    "er_pha_f",
    "ir_imb_r",
    "t_mco_b",
    "t_mco_c",
    "ref_cim10",
    "ref_atc",
    "ref_dpt",
];

/// The exact Arrow schema of each table (names, types, nullability), in the order of [`TABLES`].
/// Every column is non-nullable except `ir_ben_r.ben_dcd_dte`.
pub fn table_schemas() -> Vec<(&'static str, SchemaRef)> {
    vec![
        (TABLES[0], schema::ir_ben_r()),
        (TABLES[1], schema::er_prs_f()),
        (TABLES[2], schema::er_pha_f()),
        (TABLES[3], schema::ir_imb_r()),
        (TABLES[4], schema::t_mco_b()),
        (TABLES[5], schema::t_mco_c()),
        (TABLES[6], schema::code_list()),
        (TABLES[7], schema::code_list()),
        (TABLES[8], schema::ref_dpt()),
    ]
}

/// Generates the synthetic SNDS described in the crate documentation into `config.out_dir`.
///
/// `progress` is called from the calling thread after each chunk with the number of persons
/// generated so far. On error no table is left half-written under its real name; tables of a
/// previous run in the same directory are replaced only when every new table is complete.
pub fn generate(
    config: &GenConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenSummary, SynthError> {
    pipeline::run(config, progress)
}
