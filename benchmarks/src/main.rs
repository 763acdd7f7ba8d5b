//! # seuil-bench: seuil's benchmark runner
//!
//! One program with a subcommand per suite, data generation built in, a
//! table on standard output and JSON for the record (`--json FILE`). Every
//! suite compares within one run (seuil against raw DataFusion and raw
//! DuckDB on the same SQL and data, and against the threshold SQL a
//! statistician would write by hand for DuckDB; the server against the
//! engine in-process) and reports ratios. Run it in release: `cargo run
//! --release -p seuil-benchmarks -- <suite> ...`. Benchmarks are not tests:
//! nothing here asserts a time.
//!
//! DuckDB runs through its Python package (`benchmarks/python/`), which the
//! `queries` and `magnitudes` suites install on first use into
//! `benchmarks/.venv` (`python3 -m venv`, pinned requirements; `$PYTHON`
//! names another interpreter). Without it (no network, no Python) they
//! still run, compare with DataFusion only and say why; `--no-duckdb` leaves
//! it out. `seuil-bench compare A.json B.json` puts two recorded runs side
//! by side.

mod compare;
mod duckdb;
mod report;
mod suites;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "seuil-bench", about = "seuil benchmark suites")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Synthetic SNDS generation: persons per second.
    Gen(suites::generation::Args),
    /// Typical statistician queries: seuil against raw DataFusion, raw
    /// DuckDB and hand-written threshold SQL in DuckDB.
    Queries(suites::queries::Args),
    /// Dominance and secondary suppression: their added time over threshold
    /// mode alone.
    Magnitudes(suites::queries::Args),
    /// dp mode against threshold mode and raw DataFusion, and what the
    /// budget ledger's charge and the noise add per query.
    Dp(suites::queries::RunArgs),
    /// Each query through a coordinator over two data nodes against one
    /// engine over the same files.
    Federation(suites::federation::Args),
    /// A small query over loopback Flight SQL against the engine in-process.
    Flight(suites::flight::Args),
    /// Two recorded runs (files written by `--json`) side by side.
    Compare(compare::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let report = match cli.suite {
        Suite::Gen(args) => suites::generation::run(&args)?,
        Suite::Queries(args) => runtime()?.block_on(suites::queries::run(&args))?,
        Suite::Magnitudes(args) => runtime()?.block_on(suites::magnitudes::run(&args))?,
        Suite::Dp(args) => runtime()?.block_on(suites::dp::run(&args))?,
        Suite::Flight(args) => runtime()?.block_on(suites::flight::run(&args))?,
        Suite::Federation(args) => runtime()?.block_on(suites::federation::run(&args))?,
        Suite::Compare(args) => {
            if cli.json.is_some() {
                anyhow::bail!("compare prints its comparison; --json does not apply to it");
            }
            println!("{}", compare::run(&args)?);
            return Ok(());
        }
    };
    println!("{}", report.to_table());
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
