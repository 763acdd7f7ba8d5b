//! Finding (or, for the demo, generating) the data and opening the engine on
//! it with the configured policy.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use seuil_engine::budget::BudgetLedger;
use seuil_engine::options::ContributionKey;
use seuil_engine::{Engine, EngineOptions, IndexOpening};
use seuil_policies::{Diagnostics, PolicySource};

use crate::cli::generate::{DEMO_SEED, generate_with_progress};
use crate::config::ServerConfig;
use crate::server::audit::{AuditKey, AuditLog};

/// Where data, policy and users come from, as flags override the configuration.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataArgs {
    /// Folder of Parquet tables (default: the configuration's, `data/demo`).
    #[arg(long, env = "SEUIL_DATA")]
    pub data: Option<PathBuf>,
    /// Policy file (default: the shipped `policies/snds.toml`).
    #[arg(long, env = "SEUIL_POLICY")]
    pub policy: Option<PathBuf>,
    /// Server configuration file (default: the embedded demo configuration).
    #[arg(long, env = "SEUIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Audit log (default: the configuration's, `audit.jsonl` in the data
    /// folder).
    #[arg(long, env = "SEUIL_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Key file of the audit log's chain (default: the configuration's,
    /// `~/.config/seuil/audit.key`).
    #[arg(long, env = "SEUIL_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<PathBuf>,
}

impl DataArgs {
    /// The configuration, with the flags applied.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::load(self.config.as_deref())?;
        if let Some(data) = &self.data {
            config.server.data = data.clone();
        }
        if let Some(policy) = &self.policy {
            config.server.policy = Some(policy.clone());
        }
        if let Some(log) = &self.audit_log {
            config.server.audit_log = Some(log.clone());
        }
        if let Some(key) = &self.audit_key_file {
            config.server.audit_key_file = Some(key.clone());
        }
        Ok(config)
    }
}

/// The policy file's text, or the shipped policy.
pub fn policy_source(path: Option<&Path>) -> anyhow::Result<PolicySource> {
    match path {
        Some(path) => PolicySource::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the policy {}: {e}", path.display())),
        None => Ok(PolicySource::new(
            "policies/snds.toml (embedded)",
            seuil_policies::SNDS_POLICY,
        )),
    }
}

fn has_tables(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        })
        .unwrap_or(false)
}

/// Makes sure the data folder holds tables: for the demo, generates the
/// synthetic SNDS on first run.
pub fn ensure_demo_data(config: &ServerConfig) -> anyhow::Result<()> {
    let dir = &config.server.data;
    if has_tables(dir) {
        return Ok(());
    }
    if config.server.demo_persons == 0 {
        anyhow::bail!(
            "the data folder {} holds no Parquet tables; point --data at your data or generate the synthetic SNDS with `seuil gen --out {}`",
            dir.display(),
            dir.display()
        );
    }
    eprintln!(
        "No data in {}: generating the synthetic SNDS ({} persons, seed {DEMO_SEED}), once.",
        dir.display(),
        config.server.demo_persons
    );
    generate_with_progress(config.server.demo_persons, DEMO_SEED, dir)?;
    Ok(())
}

/// Opens the configured audit log, creating its key when there is none.
pub fn open_audit_log(config: &ServerConfig) -> anyhow::Result<AuditLog> {
    let key = AuditKey::load_or_create(&config.server.audit_key_path())?;
    Ok(AuditLog::open(&config.server.audit_log_path(), key)?)
}

/// Opens the configured privacy budget ledger, creating it when there is
/// none.
pub fn open_budget_ledger(config: &ServerConfig) -> anyhow::Result<Arc<BudgetLedger>> {
    Ok(Arc::new(BudgetLedger::open(
        &config.server.budget_ledger_path(),
    )?))
}

/// The engine's options from the configuration's limits. dp mode's choice
/// of a person's cells is keyed by a key derived from the audit key: a
/// secret of the deployment that queriers never see, the same for the
/// server and `seuil query`.
fn engine_options(config: &ServerConfig) -> anyhow::Result<EngineOptions> {
    let audit_key = AuditKey::load_or_create(&config.server.audit_key_path())?;
    Ok(EngineOptions {
        memory_limit_bytes: Some(config.limits.memory_limit_mb.saturating_mul(1 << 20)),
        target_partitions: None,
        max_sql_bytes: config.limits.max_sql_bytes,
        max_nesting: config.limits.max_nesting,
        person_index: config.server.person_index_setting(),
        contribution_key: ContributionKey::new(audit_key.derive("seuil dp contribution choice")),
        ..EngineOptions::default()
    })
}

/// Tells how long building the person index took, and the policy's warnings.
pub(crate) fn report_opening(
    config: &ServerConfig,
    engine: &Engine,
    source: &PolicySource,
    warnings: &Diagnostics,
) {
    if let Some(IndexOpening::Built(took)) = engine.data().person_index().map(|i| i.opening()) {
        eprintln!(
            "built the person index of {} in {:.1} s (once: later runs reuse it)",
            config.server.data.display(),
            took.as_secs_f64()
        );
    }
    if !warnings.0.is_empty() {
        eprintln!("{}", warnings.render(source));
    }
}

/// Opens the engine on the configured data and policy, printing the policy's
/// warnings.
pub async fn open_engine(config: &ServerConfig) -> anyhow::Result<Engine> {
    ensure_demo_data(config)?;
    let source = policy_source(config.server.policy.as_deref())?;
    let (engine, warnings) =
        Engine::open_files(&source, &config.server.data, engine_options(config)?).await?;
    report_opening(config, &engine, &source, &warnings);
    config.check_roles(engine.policy())?;
    Ok(engine.with_budget(open_budget_ledger(config)?))
}

/// Opens a data node's engine on its share of the tables
/// (`Engine::open_share`).
pub async fn open_node_engine(config: &ServerConfig) -> anyhow::Result<Engine> {
    if !has_tables(&config.server.data) {
        anyhow::bail!(
            "the data folder {} holds no Parquet tables; `seuil gen --layout federated` writes a node's folders",
            config.server.data.display()
        );
    }
    let source = policy_source(config.server.policy.as_deref())?;
    let (engine, warnings) =
        Engine::open_share(&source, &config.server.data, engine_options(config)?).await?;
    report_opening(config, &engine, &source, &warnings);
    Ok(engine)
}

/// The options of a coordinator's engine (the same limits as a server's).
pub fn coordinator_options(config: &ServerConfig) -> anyhow::Result<EngineOptions> {
    engine_options(config)
}
