//! Generates a synthetic SNDS and prints the time taken and the rows per table.
//!
//! ```text
//! cargo run --release -p seuil-synth --example gen -- 1000000 /tmp/gen1m [seed]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use seuil_synth::{GenConfig, generate};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(persons), Some(out_dir)) = (args.first().and_then(|a| a.parse().ok()), args.get(1))
    else {
        eprintln!("usage: gen PERSONS OUT_DIR [SEED]");
        return ExitCode::FAILURE;
    };
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(42);
    let config = GenConfig {
        persons,
        seed,
        out_dir: PathBuf::from(out_dir),
    };
    let started = Instant::now();
    let step = (persons / 10).max(1);
    let progress = |done: u64| {
        if done % step < 4096 || done == persons {
            eprintln!(
                "{done:>10} persons  {:>7.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    };
    match generate(&config, &progress) {
        Ok(summary) => {
            println!(
                "{persons} persons, seed {seed}, {:.1} s",
                started.elapsed().as_secs_f64()
            );
            for table in summary.tables {
                let bytes = std::fs::metadata(&table.path).map_or(0, |m| m.len());
                println!(
                    "{:<10} {:>12} rows {:>10.1} MiB",
                    table.name,
                    table.rows,
                    bytes as f64 / 1048576.0
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
