//! `seuil budget show`: what each dp user and project has spent of the
//! privacy budget, read from the deployment's ledger (the one `seuil serve`
//! and `seuil query` charge).

use std::process::ExitCode;

use seuil_engine::budget::BudgetLedger;

use crate::cli::data::DataArgs;

/// Arguments of `seuil budget show`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// Only this user's spending.
    #[arg(long)]
    pub user: Option<String>,
    /// Where the data (and so the ledger) and the configuration are.
    #[command(flatten)]
    pub data: DataArgs,
}

/// Prints the ledger's spending, a line per user and project, then a line
/// per project.
pub fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let config = args.data.config()?;
    let path = config.server.budget_ledger_path();
    if !path.exists() {
        println!(
            "no privacy budget spent yet (no ledger at {})",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let ledger = BudgetLedger::open(&path)?;
    let spending = ledger.spending(args.user.as_deref())?;
    if spending.is_empty() {
        println!("no privacy budget spent yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<16} {:>8} {:>14} {:>12}",
        "user", "project", "queries", "epsilon", "delta"
    );
    for row in spending {
        println!(
            "{:<16} {:<16} {:>8} {:>14} {:>12e}",
            row.user.as_deref().unwrap_or("(all users)"),
            row.project,
            row.queries,
            row.epsilon,
            row.delta
        );
    }
    Ok(ExitCode::SUCCESS)
}
