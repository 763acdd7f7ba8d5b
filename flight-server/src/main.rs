//! The `seuil` command line. See the crate documentation of
//! `seuil_flight_server` for the subcommands.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use seuil_flight_server::cli;
use seuil_flight_server::server::{audit, serve};

#[derive(Debug, Parser)]
#[command(
    name = "seuil",
    version,
    about = "Privacy-preserving SQL over health data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve Flight SQL to notebooks and BI tools (the demo with no arguments).
    Serve(serve::ServeArgs),
    /// Serve a data site's tables to a coordinator (`seuil serve --node`).
    Node(seuil_flight_server::federation::node::NodeArgs),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show what dp users and projects have spent of their privacy budget.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// Run a query in-process and print the released cells.
    Query(cli::query::QueryArgs),
    /// Check, explain and describe policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Generate the synthetic SNDS as Parquet.
    Gen(cli::generate::GenArgs),
    /// Make a private CA and the certificates of a local federation.
    Certs(cli::certs::CertsArgs),
    /// Read a password on standard input and print its argon2 hash.
    HashPassword,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check that no line of an audit log was edited, removed or reordered.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// The key file of the log's chain (default: `~/.config/seuil/audit.key`).
        #[arg(long, env = "SEUIL_AUDIT_KEY_FILE")]
        key_file: Option<PathBuf>,
        /// A head (last hash) kept elsewhere, which the chain must reach:
        /// detects lines removed from the end.
        #[arg(long)]
        head: Option<String>,
        /// A file holding such a head (default: FILE.head, when it exists).
        #[arg(long, conflicts_with = "head")]
        head_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum BudgetCommand {
    /// List each user's and project's spending.
    Show(cli::budget::ShowArgs),
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
        Command::Serve(args) => {
            init_logs();
            serve::run(&args).await
        }
        Command::Node(args) => {
            init_logs();
            seuil_flight_server::federation::node::run(&args).await
        }
        Command::Audit(AuditCommand::Verify {
            file,
            key_file,
            head,
            head_file,
        }) => {
            let key_path = key_file
                .or_else(seuil_flight_server::config::default_audit_key_path)
                .ok_or_else(|| anyhow::anyhow!("no audit key file: pass --key-file"))?;
            let key = audit::AuditKey::load(&key_path)?;
            let head_file = head_file.or_else(|| {
                let default = audit::AuditLog::head_path(&file);
                default.exists().then_some(default)
            });
            let head = match (head, &head_file) {
                (Some(head), _) => Some(head),
                (None, Some(path)) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            };
            match audit::verify_file(&file, &key, head.as_deref())? {
                Ok(verified) => {
                    let noun = if verified.entries == 1 {
                        "entry"
                    } else {
                        "entries"
                    };
                    let reached = if head.is_some() {
                        ", reaches the head kept apart"
                    } else {
                        ""
                    };
                    println!(
                        "{} {noun}, chain intact{reached} (last hash {})",
                        verified.entries, verified.head
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    eprintln!("{}:{broken}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Query(args) => cli::query::run(&args).await,
        Command::Budget(BudgetCommand::Show(args)) => cli::budget::show(&args),
        Command::Policy(PolicyCommand::Check(args)) => cli::policy::check(&args).await,
        Command::Policy(PolicyCommand::Explain(args)) => cli::policy::explain(&args).await,
        Command::Policy(PolicyCommand::Schema) => cli::policy::schema().map(|()| ExitCode::SUCCESS),
        Command::Certs(args) => cli::certs::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Gen(args) => cli::generate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!("no password on standard input");
            }
            println!(
                "{}",
                seuil_flight_server::passwords::hash_password(password)?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs to standard error; `RUST_LOG` chooses what (info by default).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The stack of every thread that plans or runs a query. Planning and
/// DataFusion's passes recurse over the plan; the engine's limits keep plans
/// small, and this leaves room to spare at those limits (the memory is only
/// reserved, not used, until a deep plan needs it).
const THREAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Threads for blocking work (audit writes, release rules); beyond, such
/// work waits.
const MAX_BLOCKING_THREADS: usize = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
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
