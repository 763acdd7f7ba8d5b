//! Rule 9: every query is audited.
//!
//! > Every query (user, role, SQL, rewritten plan, cells released and
//! > suppressed, outcome) is written to an append-only, hash-chained audit
//! > log before its result leaves.
//!
//! The engine reaches the log through [`AuditSink`], so that every path
//! that reads private data (the server, the CLI, and later data nodes)
//! audits the same way: an engine with a sink ([`crate::Engine::with_audit`])
//! writes a line when a query starts, before anything is planned, and a line
//! when it ends (released, refused, failed or stopped by its deadline),
//! before the first released cell can leave. A sink that cannot write stops
//! the query: nothing is released unaudited. How lines are kept (the keyed
//! hash chain, the file lock, the head kept apart) is the sink's business.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use datafusion::scalar::ScalarValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, ErrorKind, Rule};
use crate::release::{NodeTraffic, ReleaseReport};

/// What became of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted for execution; the line of its end follows.
    Started,
    /// Run, and its released cells sent.
    Ok,
    /// Refused by a rule of the policy (`rule` says which).
    Refused,
    /// Failed for another reason (`error` says which kind), a limit or a
    /// timeout among them.
    Error,
}

/// One event of a query: everything in a line of the log but its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, in RFC 3339 UTC.
    pub time: String,
    /// The query's identifier, shared by its lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
    /// Who.
    pub user: String,
    /// Under which role.
    pub role: String,
    /// The SQL as the client sent it.
    pub sql: String,
    /// Bound parameters of a prepared statement, as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// SHA-256 of the rewritten plan's text, when the query was rewritten.
    pub plan_sha256: Option<String>,
    /// Cells released.
    pub cells_released: u64,
    /// Cells suppressed.
    pub cells_suppressed: u64,
    /// Suppressed cells by reason.
    pub suppressed: BTreeMap<String, u64>,
    /// Values of released cells suppressed for too few contributors.
    #[serde(default)]
    pub values_suppressed: u64,
    /// What became of the query.
    pub outcome: Outcome,
    /// The rule that refused the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// The kind of error, when the query failed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// The refusal or error message the client received (never data values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What crossed between the coordinator and each data node (DESIGN.md
    /// §3), on a coordinator; on a node, what it sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeTraffic>,
    /// A dp query's charge to the privacy budget ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<AuditCharge>,
}

/// A dp query's charge as the audit line holds it: the ledger's own integer
/// amounts and the charge's id there (the query's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCharge {
    /// The charge's key in the ledger.
    pub charge_id: String,
    /// ε charged, in micro-units.
    pub micro_epsilon: i64,
    /// δ charged, in units of 10⁻¹⁵.
    pub delta_units: i64,
}

impl From<&crate::budget::Charge> for AuditCharge {
    fn from(charge: &crate::budget::Charge) -> Self {
        Self {
            charge_id: charge.charge_id.clone(),
            micro_epsilon: crate::budget::micro_epsilon(charge.epsilon),
            delta_units: crate::budget::delta_units(charge.delta),
        }
    }
}

impl AuditRecord {
    /// A record stamped now, with nothing released yet.
    pub fn new(user: &str, role: &str, sql: &str, outcome: Outcome) -> Self {
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            query_id: None,
            user: user.to_string(),
            role: role.to_string(),
            sql: sql.to_string(),
            params: Vec::new(),
            plan_sha256: None,
            cells_released: 0,
            cells_suppressed: 0,
            suppressed: BTreeMap::new(),
            values_suppressed: 0,
            outcome,
            rule: None,
            error: None,
            message: None,
            nodes: Vec::new(),
            budget: None,
        }
    }

    /// The first line of a query about to run with `params`, with a new
    /// query identifier.
    pub fn started(user: &str, role: &str, sql: &str, params: &[ScalarValue]) -> Self {
        let mut record = Self::new(user, role, sql, Outcome::Started);
        record.query_id = Some(new_query_id());
        record.params = params.iter().map(ScalarValue::to_string).collect();
        record
    }

    /// The same query, for its next line, stamped now.
    pub fn next(&self, outcome: Outcome) -> Self {
        let mut next = Self::new(&self.user, &self.role, &self.sql, outcome);
        next.query_id = self.query_id.clone();
        next.params = self.params.clone();
        next
    }

    /// The query's end: its cells released as `report` says, from the
    /// rewritten plan `plan`.
    pub fn released(mut self, report: &ReleaseReport, plan: &str) -> Self {
        self.outcome = Outcome::Ok;
        self.plan_sha256 = Some(sha256_hex(plan));
        self.cells_released = report.cells_released;
        self.cells_suppressed = report.cells_suppressed;
        self.values_suppressed = report.values_suppressed;
        self.nodes = report.nodes.clone();
        self.budget = report
            .dp
            .as_ref()
            .and_then(|dp| dp.charge.as_ref())
            .map(AuditCharge::from);
        self.suppressed = report
            .suppressed_by_reason
            .iter()
            .map(|(reason, n)| (reason.as_str().to_string(), *n))
            .collect();
        self
    }

    /// The same line, with the charge the query made to the privacy budget
    /// ledger, if it made one (a dp query that failed after its charge).
    pub fn charged(mut self, charge: Option<&crate::budget::Charge>) -> Self {
        self.budget = charge.map(AuditCharge::from);
        self
    }

    /// The query's end: refused or failed with `error`, whose client
    /// message is recorded.
    pub fn failed(mut self, error: &EngineError) -> Self {
        match error.refusal() {
            Some(refusal) => {
                self.outcome = Outcome::Refused;
                self.rule = Some(refusal.rule);
            }
            None => {
                self.outcome = Outcome::Error;
                self.error = Some(error.kind());
            }
        }
        self.message = Some(error.client_message());
        self
    }
}

/// A new query identifier: 128 random bits, in hex.
pub fn new_query_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The SHA-256 of a text, in hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Why the audit log could not take a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditUnavailable(pub String);

impl fmt::Display for AuditUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the audit log cannot be written: {}", self.0)
    }
}

/// Where audit lines go.
#[async_trait]
pub trait AuditSink: fmt::Debug + Send + Sync {
    /// Appends a line, durably: once this returns, the line survives a
    /// crash. An error stops the query it belongs to.
    async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable>;
}
