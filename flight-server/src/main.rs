//! The `seuil` command line. See the crate documentation of
//! `seuil_flight_server` for the subcommands.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use seuil_flight_server::cli;

#[derive(Debug, Parser)]
#[command(name = "seuil", version, about = "Privacy-preserving SQL over health data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a query in-process and print the released cells.
    Query(cli::query::QueryArgs),
    /// Check, explain and describe policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Generate the synthetic SNDS as Parquet.
    Gen(cli::generate::GenArgs),
    /// Read a password on standard input and print its argon2 hash.
    HashPassword,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file (and, with --data, that it matches the data).
    Check(cli::policy::CheckArgs),
    /// Show how a query is rewritten for a user, and which rules acted.
    Explain(cli::policy::ExplainArgs),
    /// Print the JSON Schema of the policy format.
    Schema,
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Query(args) => cli::query::run(&args).await,
        Command::Policy(PolicyCommand::Check(args)) => cli::policy::check(&args).await,
        Command::Policy(PolicyCommand::Explain(args)) => cli::policy::explain(&args).await,
        Command::Policy(PolicyCommand::Schema) => cli::policy::schema().map(|()| ExitCode::SUCCESS),
        Command::Gen(args) => cli::generate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!("no password on standard input");
            }
            println!("{}", seuil_flight_server::passwords::hash_password(password)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
