//! Generation of the synthetic SNDS: time for N persons (target: 1 million
//! persons in under 2 minutes on 2 cores).

use std::path::PathBuf;
use std::time::Instant;

use crate::report::{Measurement, Report};

/// Arguments of the generation suite.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Number of persons.
    #[arg(long, default_value_t = 1_000_000)]
    pub persons: u64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output folder (a temporary one when omitted).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the suite.
pub fn run(args: &Args) -> anyhow::Result<Report> {
    let temporary = tempfile::tempdir()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let config = seuil_synth::GenConfig {
        persons: args.persons,
        seed: args.seed,
        out_dir: out,
    };
    let started = Instant::now();
    let summary = seuil_synth::generate(&config, &|_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    let mut measurements = vec![Measurement {
        name: format!("generate {} persons", args.persons),
        values: vec![
            ("seconds".into(), seconds),
            ("persons_per_second".into(), args.persons as f64 / seconds),
        ],
        ratio: None,
        ratios: Vec::new(),
    }];
    for table in &summary.tables {
        measurements.push(Measurement {
            name: format!("rows of {}", table.name),
            values: vec![("rows".into(), table.rows as f64)],
            ratio: None,
            ratios: Vec::new(),
        });
    }
    Ok(Report {
        suite: "gen".into(),
        setup: vec![
            ("persons".into(), args.persons.to_string()),
            ("seed".into(), args.seed.to_string()),
            (
                "threads".into(),
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .to_string(),
            ),
        ],
        measurements,
        summary: vec![("target".into(), "1,000,000 persons in under 120 s".into())],
    })
}
