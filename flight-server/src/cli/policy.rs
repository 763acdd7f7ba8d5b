//! `seuil policy check`, `seuil policy schema`, `seuil policy explain`.

use std::path::PathBuf;
use std::process::ExitCode;

use seuil_engine::{DataCatalog, EngineOptions, User};

use crate::cli::data::{DataArgs, open_engine, policy_source};

/// Arguments of `seuil policy check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The policy file.
    pub file: PathBuf,
    /// Also check the policy against the tables of this data folder.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// Prints every problem as `file:line:column: level: message`; fails on errors.
pub async fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let source = policy_source(Some(&args.file))?;
    let data = match &args.data {
        None => None,
        Some(dir) => {
            if !dir.is_dir() {
                eprintln!("{}: error: no such data folder", dir.display());
                return Ok(ExitCode::FAILURE);
            }
            match DataCatalog::open(dir, &EngineOptions::default()).await {
                Ok(catalog) => Some(catalog.data_schema()),
                Err(e) => {
                    eprintln!("{}: error: {e}", dir.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    };
    let (policy, diagnostics) = seuil_policies::check(&source, data.as_ref());
    if !diagnostics.0.is_empty() {
        eprintln!("{}", diagnostics.render(&source));
    }
    match policy {
        Some(policy) => {
            println!(
                "{}: policy {} version {} is valid: {} tables, {} roles{}",
                source.name,
                policy.name,
                policy.version,
                policy.tables.len(),
                policy.roles.len(),
                if data.is_some() {
                    ", matches the data"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::FAILURE),
    }
}

/// Prints the JSON Schema of the policy format.
pub fn schema() -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&seuil_policies::json_schema())?
    );
    Ok(())
}

/// Arguments of `seuil policy explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The user whose role applies.
    #[arg(long)]
    pub user: String,
    /// Where the data, policy and users are.
    #[command(flatten)]
    pub data: DataArgs,
    /// The query.
    pub sql: String,
}

/// Prints how a query is rewritten for a user, and which rules acted.
pub async fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = args.data.config()?;
    let engine = open_engine(&config).await?;
    let Some(role) = config.role_of(&args.user) else {
        eprintln!("error: unknown user {}", args.user);
        return Ok(ExitCode::FAILURE);
    };
    let user = User::new(&args.user, role);
    match engine.explain(&user, &args.sql).await {
        Ok(explanation) => {
            println!("-- user {} (role {role})", args.user);
            match &explanation.sql {
                Some(sql) => println!("-- rewritten query:\n{sql}\n"),
                None => println!("-- the rewritten query has no SQL form; see the plan\n"),
            }
            println!("-- rules that acted:");
            for rule in &explanation.rules {
                println!("--   {rule}");
            }
            if !explanation.cost.is_empty() {
                println!("-- privacy budget (charged before anything is read):");
                for line in &explanation.cost {
                    println!("--   {line}");
                }
            }
            println!("\n-- plan:\n{}", explanation.plan);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
