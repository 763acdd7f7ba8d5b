//! The benchmark suites.

pub mod dp;
pub mod federation;
pub mod flight;
pub mod generation;
pub mod magnitudes;
pub mod queries;

use std::path::Path;
use std::time::Instant;

use futures::TryStreamExt;
use seuil_engine::{Engine, NodeTraffic, QueryTimings, User};

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

/// One timed run of a query through seuil, its result read to the end.
pub struct TimedQuery {
    /// Milliseconds from the call to the last batch.
    pub ms: f64,
    /// Rows released.
    pub rows: usize,
    /// Where the engine's time went.
    pub timings: QueryTimings,
    /// Cells suppressed.
    pub suppressed: u64,
    /// What crossed from each data node, on a coordinator.
    pub nodes: Vec<NodeTraffic>,
}

/// Runs `sql` for `user` and times it.
pub async fn time_query(engine: &Engine, user: &User, sql: &str) -> anyhow::Result<TimedQuery> {
    let started = Instant::now();
    let result = engine.query(user, sql).await?;
    let timings = result.timings;
    let suppressed = result.report.cells_suppressed;
    let nodes = result.report.nodes.clone();
    let batches: Vec<_> = result.stream.try_collect().await?;
    Ok(TimedQuery {
        ms: started.elapsed().as_secs_f64() * 1000.0,
        rows: batches.iter().map(|b| b.num_rows()).sum(),
        timings,
        suppressed,
        nodes,
    })
}
