//! `seuil gen`: the synthetic SNDS as Parquet, with a progress bar.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Seed of the demo data, so that every demo shows the same numbers.
pub const DEMO_SEED: u64 = 2026;

/// Arguments of `seuil gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Number of persons.
    #[arg(long, default_value_t = 100_000)]
    pub persons: u64,
    /// Seed: the same seed gives identical files.
    #[arg(long, default_value_t = DEMO_SEED)]
    pub seed: u64,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// `single` (one folder of tables) or `federated` (one folder per data
    /// node: `cnam/` and `hospitals/`, the code lists in both).
    #[arg(long, value_enum, default_value_t = Layout::Single)]
    pub layout: Layout,
}

/// How the tables are laid out in folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// One folder of tables, for `seuil serve --data`.
    Single,
    /// One folder per data node, for `seuil node --data`.
    Federated,
}

/// Generates with a progress bar on standard error.
pub fn generate_with_progress(persons: u64, seed: u64, out: &Path) -> anyhow::Result<()> {
    generate_laid_out(persons, seed, out, Layout::Single)
}

/// Generates in `layout`, with a progress bar on standard error.
pub fn generate_laid_out(
    persons: u64,
    seed: u64,
    out: &Path,
    layout: Layout,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new(persons);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} persons ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let config = seuil_synth::GenConfig {
        persons,
        seed,
        out_dir: out.to_path_buf(),
    };
    let progress = |done| bar.set_position(done);
    let summary = match layout {
        Layout::Single => seuil_synth::generate(&config, &progress),
        Layout::Federated => seuil_synth::generate_federated(&config, &progress),
    }
    .map_err(|e| anyhow::anyhow!("generation failed: {e}"))?;
    bar.finish_and_clear();
    eprintln!(
        "Wrote {} tables to {} in {:.1} s:",
        summary.tables.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    for table in &summary.tables {
        eprintln!(
            "  {:<10} {:>12} rows  {}",
            table.name,
            table.rows,
            table.path.display()
        );
    }
    Ok(())
}

/// Runs `seuil gen`.
pub fn run(args: &GenArgs) -> anyhow::Result<()> {
    generate_laid_out(args.persons, args.seed, &args.out, args.layout)
}
