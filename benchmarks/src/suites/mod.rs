//! The benchmark suites.

pub mod flight;
pub mod generation;
pub mod magnitudes;
pub mod queries;

use std::path::Path;

/// Generates the synthetic SNDS (seed 1) into `data` unless it holds the
/// tables already, so that every suite can start from nothing.
pub fn ensure_data(data: &Path, persons: u64) -> anyhow::Result<()> {
    if data.join("ref_dpt.parquet").exists() {
        return Ok(());
    }
    eprintln!("generating {persons} persons into {}", data.display());
    let config = seuil_synth::GenConfig {
        persons,
        seed: 1,
        out_dir: data.to_path_buf(),
    };
    seuil_synth::generate(&config, &|_| {})?;
    Ok(())
}
