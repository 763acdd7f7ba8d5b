//! `seuil query`: runs a query in-process and prints the released cells and
//! the release report.

use std::process::ExitCode;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use seuil_engine::{ReleaseReport, User};

use crate::cli::data::{DataArgs, open_audit_log, open_engine};

/// How to print the result.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Arguments of `seuil query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The user whose role applies.
    #[arg(long)]
    pub user: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Where the data, policy and users are.
    #[command(flatten)]
    pub data: DataArgs,
    /// The query.
    pub sql: String,
}

/// Formats batches in one of the output formats.
pub fn format_batches(batches: &[RecordBatch], format: Format) -> anyhow::Result<String> {
    match format {
        Format::Table => {
            Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
        }
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            Ok(String::from_utf8(out)?)
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            let out = writer.into_inner();
            Ok(if out.is_empty() {
                "[]".into()
            } else {
                String::from_utf8(out)?
            })
        }
    }
}

/// The release report, as the user may see it: how many cells were
/// released and what the rules withhold. Counts of suppressed cells would
/// tell a cell of 0 persons from one of a few; they go to the audit log.
pub fn describe_report(report: &ReleaseReport) -> String {
    let mut text = format!(
        "{} cells released (policy {} {}, {} mode): {}",
        report.cells_released,
        report.policy,
        report.policy_version,
        report.mode,
        report.withheld()
    );
    if let Some(dp) = &report.dp {
        for value in &dp.values {
            text.push_str(&format!(
                "\n{}: {} noise of scale {}",
                value.name, value.mechanism, value.scale
            ));
            if let Some(ci) = value.ci95 {
                text.push_str(&format!(", 95% interval ±{ci}"));
            }
        }
        if let Some(charge) = &dp.charge {
            text.push_str(&format!(
                "\nspent epsilon {} and delta {:e}; you have epsilon {} left",
                charge.epsilon, charge.delta, charge.user_epsilon_left
            ));
            if let Some(left) = charge.project_epsilon_left {
                text.push_str(&format!(", the project {left}"));
            }
        }
    }
    text
}

/// Runs `seuil query`. The query reads private data, so it is audited as
/// the server audits it: a line when it starts, one when it ends.
pub async fn run(args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let config = args.data.config()?;
    let engine = open_engine(&config).await?;
    let audit = open_audit_log(&config)?;
    let Some(role) = config.role_of(&args.user) else {
        eprintln!("error: unknown user {}", args.user);
        return Ok(ExitCode::FAILURE);
    };
    let user = User::new(&args.user, role);
    // The engine audits the query as the server's does: a line when it
    // starts, one when it ends.
    let engine = engine.with_audit(Arc::new(audit));
    match engine.query(&user, &args.sql).await {
        Ok(result) => {
            let batches: Vec<RecordBatch> = result.stream.try_collect().await?;
            println!("{}", format_batches(&batches, args.format)?);
            eprintln!("{}", describe_report(&result.report));
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
