//! Server configuration: where the data and policy are, how to listen, the
//! limits, and the users. Users are not policy: the policy says what a role
//! may do, this file says who has which role and how they prove it.
//!
//! Every setting has a default, so `seuil serve` runs the demo with no file;
//! `--config FILE` replaces the embedded demo configuration, and command-line
//! flags and `SEUIL_*` environment variables override single settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use seuil_engine::PersonIndexSetting;

/// The demo configuration, embedded: users `alice` (researcher) and `bob`
/// (public), both with password `demo`, on loopback.
pub const DEMO_CONFIG: &str = include_str!("../demo.toml");

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen and what to serve.
    #[serde(default)]
    pub server: ServerSection,
    /// Limits on queries.
    #[serde(default)]
    pub limits: Limits,
    /// TLS, when set.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Users by name.
    #[serde(default)]
    pub users: BTreeMap<String, UserEntry>,
    /// Data nodes this server coordinates (`[[nodes]]`, or `--node
    /// NAME=URL`): their tables are read on them.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// How a coordinator reaches its nodes.
    #[serde(default)]
    pub federation: FederationSection,
}

/// A data node of a coordinator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's name: in errors, the audit log, and the name its TLS
    /// certificate must carry.
    pub name: String,
    /// Where it listens: `grpc+tls://HOST:PORT`, or `grpc://HOST:PORT` on
    /// loopback only.
    pub url: String,
}

impl NodeEntry {
    /// Parses `NAME=URL`, as `--node` takes it.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (name, url) = text
            .split_once('=')
            .filter(|(name, url)| !name.is_empty() && !url.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--node takes NAME=URL, as in cnam=grpc://127.0.0.1:50061")
            })?;
        Ok(Self {
            name: name.to_string(),
            url: url.to_string(),
        })
    }
}

/// How a coordinator reaches its nodes: mutual TLS, and how long it waits
/// for a node that does not answer at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// PEM certificate the coordinator presents to its nodes, which pin its
    /// fingerprint.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its PEM private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// PEM CA that the nodes' certificates chain to; each node's
    /// certificate must be issued for the node's name.
    #[serde(default)]
    pub node_ca: Option<PathBuf>,
    /// Longest wait between two attempts to reach a node that does not
    /// answer at start-up; the coordinator waits for every node.
    #[serde(default = "default_node_retry")]
    pub node_retry_seconds: u64,
}

fn default_node_retry() -> u64 {
    5
}

impl Default for FederationSection {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            node_ca: None,
            node_retry_seconds: default_node_retry(),
        }
    }
}

/// Where to listen and what to serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address of the Flight SQL service.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Folder of Parquet tables.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Policy file; the shipped SNDS policy when omitted.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Append-only, keyed, hash-chained audit log; `audit.jsonl` in the
    /// data folder when omitted, so that the server and `seuil query` on the
    /// same data write the same log.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// The key of the audit log's chain: a file apart from the log, readable
    /// by the server's user only, created when missing.
    /// `$XDG_CONFIG_HOME/seuil/audit.key` (or `~/.config/seuil/audit.key`)
    /// when omitted.
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
    /// The privacy budget ledger of dp roles (SQLite); `budget.sqlite` next
    /// to the audit log when omitted (in the data folder by default), so
    /// that the server and `seuil query` on the same data charge the same
    /// budget.
    #[serde(default)]
    pub budget_ledger: Option<PathBuf>,
    /// When the data folder is empty, generate the synthetic SNDS with this
    /// many persons (the demo). `0` disables generation.
    #[serde(default = "default_demo_persons")]
    pub demo_persons: u64,
    /// Lifetime of a bearer token, in seconds.
    #[serde(default = "default_token_seconds")]
    pub token_lifetime_seconds: u64,
    /// Where the person index is kept: a folder, or `"off"`; `.seuil-index`
    /// inside the data folder when omitted. Point it elsewhere when the data
    /// folder is read-only.
    #[serde(default)]
    pub person_index: Option<PathBuf>,
}

impl ServerSection {
    /// The audit log: the configured one, or `audit.jsonl` in the data folder.
    pub fn audit_log_path(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| self.data.join("audit.jsonl"))
    }

    /// The budget ledger: the configured one, or `budget.sqlite` next to the
    /// audit log (a coordinator's data folder may hold no tables of its own).
    pub fn budget_ledger_path(&self) -> PathBuf {
        self.budget_ledger
            .clone()
            .unwrap_or_else(|| self.audit_log_path().with_file_name("budget.sqlite"))
    }

    /// The audit key file: the configured one, or `seuil/audit.key` in the
    /// user's configuration folder (next to the log when there is none).
    pub fn audit_key_path(&self) -> PathBuf {
        if let Some(path) = &self.audit_key_file {
            return path.clone();
        }
        default_audit_key_path().unwrap_or_else(|| {
            let mut name = self.audit_log_path().into_os_string();
            name.push(".key");
            PathBuf::from(name)
        })
    }

    /// The person index setting of the engine.
    pub fn person_index_setting(&self) -> PersonIndexSetting {
        match &self.person_index {
            None => PersonIndexSetting::InDataFolder,
            Some(folder) if folder.as_os_str() == "off" => PersonIndexSetting::Off,
            Some(folder) => PersonIndexSetting::Folder(folder.clone()),
        }
    }
}

/// `$XDG_CONFIG_HOME/seuil/audit.key`, else `~/.config/seuil/audit.key`.
pub fn default_audit_key_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("seuil").join("audit.key"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}
fn default_data() -> PathBuf {
    PathBuf::from("data/demo")
}
fn default_demo_persons() -> u64 {
    100_000
}
fn default_token_seconds() -> u64 {
    8 * 3600
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data: default_data(),
            policy: None,
            audit_log: None,
            audit_key_file: None,
            budget_ledger: None,
            demo_persons: default_demo_persons(),
            token_lifetime_seconds: default_token_seconds(),
            person_index: None,
        }
    }
}

/// Limits on queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest a query may run.
    #[serde(default = "default_timeout")]
    pub query_timeout_seconds: u64,
    /// Memory of the query pool, shared by all queries; operators spill beyond it.
    #[serde(default = "default_memory")]
    pub memory_limit_mb: usize,
    /// Queries one user may run at once.
    #[serde(default = "default_concurrent")]
    pub max_concurrent_queries_per_user: usize,
    /// Longest SQL text, in bytes.
    #[serde(default = "default_sql_bytes")]
    pub max_sql_bytes: usize,
    /// Deepest SQL nesting.
    #[serde(default = "default_nesting")]
    pub max_nesting: usize,
    /// Queries running at once, over all users.
    #[serde(default = "default_total")]
    pub max_concurrent_queries: usize,
    /// Queries of one user waiting for a slot beyond those running; the
    /// next one is refused.
    #[serde(default = "default_queued")]
    pub max_queued_queries_per_user: usize,
    /// Longest a query waits for a slot before it is refused.
    #[serde(default = "default_queue_wait")]
    pub queue_wait_seconds: u64,
    /// Threads that check passwords (each holds its argon2 memory).
    #[serde(default = "default_login_threads")]
    pub login_threads: usize,
}

fn default_timeout() -> u64 {
    300
}
fn default_memory() -> usize {
    4096
}
fn default_concurrent() -> usize {
    4
}
fn default_sql_bytes() -> usize {
    100_000
}
fn default_nesting() -> usize {
    64
}
fn default_total() -> usize {
    8
}
fn default_queued() -> usize {
    32
}
fn default_queue_wait() -> u64 {
    60
}
fn default_login_threads() -> usize {
    2
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            query_timeout_seconds: default_timeout(),
            memory_limit_mb: default_memory(),
            max_concurrent_queries_per_user: default_concurrent(),
            max_sql_bytes: default_sql_bytes(),
            max_nesting: default_nesting(),
            max_concurrent_queries: default_total(),
            max_queued_queries_per_user: default_queued(),
            queue_wait_seconds: default_queue_wait(),
            login_threads: default_login_threads(),
        }
    }
}

/// TLS settings: a certificate and key, and a client CA for mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA that client certificates must chain to (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// On a data node: the SHA-256 fingerprints of the coordinators'
    /// certificates it answers (hex, as `seuil certs` prints them); any
    /// other certificate of the CA is refused.
    #[serde(default)]
    pub client_fingerprints: Vec<String>,
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Role in the policy.
    pub role: String,
    /// Argon2 hash of the password (`seuil hash-password` prints one).
    pub password_hash: String,
}

impl ServerConfig {
    /// Parses a configuration file's text.
    pub fn parse(text: &str, name: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let line = text[..span.start].matches('\n').count() + 1;
                    let column =
                        span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{name}:{line}:{column}")
                })
                .unwrap_or_else(|| name.to_string());
            anyhow::anyhow!("{location}: error: {}", e.message().trim())
        })
    }

    /// Reads the file at `path`, or the embedded demo configuration.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            None => Self::parse(DEMO_CONFIG, "demo configuration"),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                Self::parse(&text, &path.display().to_string())
            }
        }
    }

    /// The role of a user, if the user exists.
    pub fn role_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(|u| u.role.as_str())
    }

    /// Checks that every user's role exists in the policy.
    pub fn check_roles(&self, policy: &seuil_policies::Policy) -> anyhow::Result<()> {
        for (name, user) in &self.users {
            if !policy.roles.contains_key(&user.role) {
                anyhow::bail!(
                    "user {name} has role {}, which the policy {} does not define (roles: {})",
                    user.role,
                    policy.name,
                    policy.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(())
    }
}
