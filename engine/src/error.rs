//! Typed errors of the engine. The server maps each variant to one gRPC code,
//! once, at its edge; nothing here knows about gRPC.
//!
//! No message built here may contain a data value: refusals are computed from
//! the query and the policy only, and execution failures are reported by kind.

use std::fmt;

use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Expr;
use serde::{Deserialize, Serialize};

/// The rule of the privacy contract (DESIGN.md §2) that refused a query.
/// Serialised as its stable [`Rule::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Rule 1: a result built from private tables is released only as aggregates.
    AggregatesOnly,
    /// Rule 2: every released cell covers at least `min_persons` persons.
    MinPersons,
    /// Rule 3: person lineage through the whole plan; no mixing of persons.
    PersonLineage,
    /// Rule 4: identifiers never leave.
    Identifiers,
    /// Rule 5: no side channels.
    SideChannels,
    /// Rule 6: magnitudes are protected too.
    Magnitudes,
    /// Rule 7: margins must not give cells back.
    Margins,
    /// Rule 8: a role sees only its approved scope.
    Scopes,
    /// Queries only: seuil never writes, changes settings or runs utility statements.
    ReadOnly,
    /// The role's release mode is not available.
    Mode,
    /// A role that rounds rounds every released value.
    Rounding,
    /// dp mode: the query's privacy cost is more than the budget left.
    Budget,
}

impl Rule {
    /// The rule's number in DESIGN.md §2, if it has one.
    pub fn number(self) -> Option<u8> {
        match self {
            Rule::AggregatesOnly => Some(1),
            Rule::MinPersons => Some(2),
            Rule::PersonLineage => Some(3),
            Rule::Identifiers => Some(4),
            Rule::SideChannels => Some(5),
            Rule::Magnitudes => Some(6),
            Rule::Margins => Some(7),
            Rule::Scopes => Some(8),
            Rule::ReadOnly | Rule::Mode | Rule::Rounding | Rule::Budget => None,
        }
    }

    /// The rule's short title, as the contract words it.
    pub fn title(self) -> &'static str {
        match self {
            Rule::AggregatesOnly => "aggregates only",
            Rule::MinPersons => "persons, not rows, are counted",
            Rule::PersonLineage => "person lineage",
            Rule::Identifiers => "identifiers never leave",
            Rule::SideChannels => "no side channels",
            Rule::Magnitudes => "magnitudes are protected",
            Rule::Margins => "margins must not give cells back",
            Rule::Scopes => "scopes",
            Rule::ReadOnly => "queries only",
            Rule::Mode => "release mode",
            Rule::Rounding => "rounding",
            Rule::Budget => "privacy budget",
        }
    }

    /// A stable identifier for logs, audit lines and tests.
    pub fn code(self) -> &'static str {
        match self {
            Rule::AggregatesOnly => "aggregates_only",
            Rule::MinPersons => "min_persons",
            Rule::PersonLineage => "person_lineage",
            Rule::Identifiers => "identifiers",
            Rule::SideChannels => "side_channels",
            Rule::Magnitudes => "magnitudes",
            Rule::Margins => "margins",
            Rule::Scopes => "scopes",
            Rule::ReadOnly => "read_only",
            Rule::Mode => "mode",
            Rule::Rounding => "rounding",
            Rule::Budget => "budget",
        }
    }
}

/// Where in the SQL text a refusal points, one-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Line.
    pub line: u64,
    /// Column.
    pub column: u64,
}

/// A query refused by the policy: which rule, what in the query, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule that refused.
    pub rule: Rule,
    /// What in the query breaks the rule.
    pub message: String,
    /// Where in the SQL, when known.
    pub place: Option<Place>,
    /// How to write the query instead.
    pub hint: String,
}

impl Refusal {
    /// A refusal without a place.
    pub fn new(rule: Rule, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
            place: None,
            hint: hint.into(),
        }
    }

    /// Sets the place, if one is known.
    pub fn at(mut self, place: Option<Place>) -> Self {
        self.place = self.place.or(place);
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule.number() {
            Some(n) => write!(f, "refused by rule {n} ({})", self.rule.title())?,
            None => write!(f, "refused ({})", self.rule.title())?,
        }
        if let Some(place) = self.place {
            write!(f, " at line {}, column {}", place.line, place.column)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, ". Hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Every way an engine call can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The policy refused the query.
    #[error("{0}")]
    Refused(Refusal),
    /// The SQL is malformed or names something that does not exist (for this
    /// role). The message names the SQL's own words only.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The user or role is unknown to the engine.
    #[error("unknown role {0}")]
    UnknownRole(String),
    /// A limit was reached: SQL size, nesting, memory, time.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The query failed while running. The message says what kind of failure,
    /// never the data involved.
    #[error("query failed while running: {0}")]
    Execution(String),
    /// The engine could not be opened on this policy and data.
    #[error("{0}")]
    Setup(String),
    /// A fault of seuil itself (an invariant the rewrite relies on did not
    /// hold). The query is stopped; the detail is for the operator's log,
    /// and holds no data values.
    #[error("internal error: {0}")]
    Internal(String),
    /// The audit log could not take the query's line, so the query was
    /// stopped (nothing is released unaudited).
    #[error("{0}")]
    Audit(String),
    /// A data node the query needs did not answer, or stopped answering
    /// midway; nothing of the query was released. The message names the
    /// node, never what it said.
    #[error("data node {0} stopped answering; nothing was released")]
    Unavailable(String),
}

/// The kind of an engine error, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Refused by a rule.
    Refused,
    /// Malformed SQL or unknown names.
    InvalidQuery,
    /// A role the policy does not define.
    UnknownRole,
    /// A limit: size, memory, time, queue.
    Limit,
    /// A failure while running.
    Execution,
    /// The engine cannot run queries on this policy and data.
    Setup,
    /// A fault of seuil itself.
    Internal,
    /// The audit log could not be written.
    Audit,
    /// A data node did not answer.
    Unavailable,
}

impl ErrorKind {
    /// The kind's stable name.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::InvalidQuery => "invalid_query",
            ErrorKind::UnknownRole => "unknown_role",
            ErrorKind::Limit => "limit",
            ErrorKind::Execution => "execution",
            ErrorKind::Setup => "setup",
            ErrorKind::Internal => "internal",
            ErrorKind::Audit => "audit",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

impl EngineError {
    /// Shorthand for a refusal.
    pub fn refused(rule: Rule, message: impl Into<String>, hint: impl Into<String>) -> Self {
        EngineError::Refused(Refusal::new(rule, message, hint))
    }

    /// The limit on the cells of one released aggregate, which the release
    /// step holds in memory: wherever they are computed, here or on a node.
    pub fn too_many_cells(max_cells: usize) -> Self {
        EngineError::Limit(format!(
            "a released aggregate of the query has more than {max_cells} cells; group by fewer or coarser columns"
        ))
    }

    /// A fault of seuil itself.
    pub fn internal(detail: impl Into<String>) -> Self {
        EngineError::Internal(detail.into())
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Refused(_) => ErrorKind::Refused,
            EngineError::InvalidQuery(_) => ErrorKind::InvalidQuery,
            EngineError::UnknownRole(_) => ErrorKind::UnknownRole,
            EngineError::Limit(_) => ErrorKind::Limit,
            EngineError::Execution(_) => ErrorKind::Execution,
            EngineError::Setup(_) => ErrorKind::Setup,
            EngineError::Internal(_) => ErrorKind::Internal,
            EngineError::Audit(_) => ErrorKind::Audit,
            EngineError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }

    /// What a client is told. Refusals, invalid queries, limits and
    /// execution failures say what the client can act on (they hold no data
    /// values); setup problems, internal faults and audit failures may name
    /// files or internals, which are for the operator's log only.
    pub fn client_message(&self) -> String {
        match self {
            EngineError::Refused(_)
            | EngineError::InvalidQuery(_)
            | EngineError::Limit(_)
            | EngineError::Execution(_)
            | EngineError::Unavailable(_) => self.to_string(),
            EngineError::UnknownRole(_) => {
                "your user's role is not defined by the policy in force; ask the operator"
                    .to_string()
            }
            EngineError::Setup(_) => {
                "the server cannot run queries right now; see its log".to_string()
            }
            EngineError::Internal(_) => {
                "internal error of seuil; the operator's log has the detail".to_string()
            }
            EngineError::Audit(_) => {
                "internal error while writing the audit log; see the server log".to_string()
            }
        }
    }

    /// The refusal, if this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            EngineError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// A DataFusion error met while building or checking a rewritten plan: the
/// user's query was planned already, so the fault is seuil's own. Planning
/// reads no data, so the message holds none.
pub(crate) fn plan_fault(error: datafusion::error::DataFusionError) -> EngineError {
    EngineError::Internal(format!("building the rewritten plan: {}", error.message()))
}

impl From<Refusal> for EngineError {
    fn from(refusal: Refusal) -> Self {
        EngineError::Refused(refusal)
    }
}

/// The place in the SQL of the first column an expression references.
pub fn place_of(expr: &Expr) -> Option<Place> {
    let mut place = None;
    let _ = expr.apply(|e| {
        if let Expr::Column(column) = e
            && let Some(p) = place_of_column(column)
        {
            place = Some(p);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    place
}

/// The place in the SQL of a column reference, when the planner recorded it.
pub fn place_of_column(column: &Column) -> Option<Place> {
    column.spans().first().map(|span| Place {
        line: span.start.line,
        column: span.start.column,
    })
}
