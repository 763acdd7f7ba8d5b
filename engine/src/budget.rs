//! The privacy budget ledger of dp mode (DESIGN.md §2, "Budget").
//!
//! A dp query's cost (ε, δ) depends only on the policy and the query's
//! shape, so it is known before any data is read. The engine charges it
//! here first, in one durable transaction that checks what the user and the
//! project have left and records the charge; only then are cells computed.
//! A crash after the charge leaves budget spent and nothing released, never
//! the other way round.
//!
//! The ledger is a SQLite database (through `rusqlite`) in WAL mode with
//! `synchronous = FULL`: a committed charge is on disk before the query
//! goes on, survives `kill -9` and power loss, and the database opens clean
//! after either. `BEGIN IMMEDIATE` takes SQLite's write lock before the
//! check, so concurrent queries, in one process or in several (`seuil serve`
//! and `seuil query` share the ledger of a data folder), are serialised:
//! they can never spend more than the budget together.
//!
//! Amounts are integers: ε in micro-units and δ in units of 10⁻¹⁵, each
//! rounded up, so that sums are exact and a charge is never less than the
//! cost. Each charge is keyed by the query's id, so that a retried charge of
//! one query is counted once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::error::{EngineError, Rule};

/// Micro-ε per unit of ε.
const EPSILON_UNIT: f64 = 1e6;
/// δ units per unit of δ.
const DELTA_UNIT: f64 = 1e15;

/// ε as the ledger counts it: micro-units, rounded up.
pub fn micro_epsilon(epsilon: f64) -> i64 {
    to_units(epsilon, EPSILON_UNIT)
}

/// δ as the ledger counts it: units of 10⁻¹⁵, rounded up.
pub fn delta_units(delta: f64) -> i64 {
    to_units(delta, DELTA_UNIT)
}

fn to_units(amount: f64, unit: f64) -> i64 {
    let units = (amount * unit).ceil();
    if units.is_finite() && units >= 0.0 && units < i64::MAX as f64 {
        units as i64
    } else {
        i64::MAX
    }
}

fn epsilon_of(units: i64) -> f64 {
    units as f64 / EPSILON_UNIT
}

fn delta_of(units: i64) -> f64 {
    units as f64 / DELTA_UNIT
}

/// The limits a charge is checked against: the role's dp settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetLimits {
    /// Total ε per user.
    pub user_epsilon: f64,
    /// Total ε of the project (the role), if limited.
    pub project_epsilon: Option<f64>,
    /// Total δ per user, if limited.
    pub user_delta: Option<f64>,
}

impl BudgetLimits {
    /// The limits of a role's dp settings.
    pub fn of(settings: &seuil_policies::DpSettings) -> Self {
        Self {
            user_epsilon: settings.epsilon_budget,
            project_epsilon: settings.project_epsilon_budget,
            user_delta: settings.delta_budget,
        }
    }
}

/// Who pays a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payer<'a> {
    /// The user.
    pub user: &'a str,
    /// The user's project: the role the query runs under.
    pub project: &'a str,
}

/// A committed charge, and what is left after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Charge {
    /// The query the charge is for: its key in the ledger.
    pub charge_id: String,
    /// ε charged (micro-ε, as an ε).
    pub epsilon: f64,
    /// δ charged.
    pub delta: f64,
    /// ε the user has left in the project after the charge.
    pub user_epsilon_left: f64,
    /// ε the project has left after the charge, if it is limited.
    pub project_epsilon_left: Option<f64>,
    /// δ the user has left, if it is limited.
    pub user_delta_left: Option<f64>,
}

/// What one user or project has spent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spending {
    /// The user, or `None` for a project's total.
    pub user: Option<String>,
    /// The project (role).
    pub project: String,
    /// Queries charged.
    pub queries: u64,
    /// ε spent.
    pub epsilon: f64,
    /// δ spent.
    pub delta: f64,
}

/// The budget ledger.
pub struct BudgetLedger {
    path: Option<PathBuf>,
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for BudgetLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetLedger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn ledger_error(error: rusqlite::Error) -> EngineError {
    EngineError::Setup(format!("the privacy budget ledger: {error}"))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS charges (
    charge_id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    project TEXT NOT NULL,
    micro_epsilon INTEGER NOT NULL CHECK (micro_epsilon >= 0),
    delta_units INTEGER NOT NULL CHECK (delta_units >= 0),
    charged_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_payer ON charges (project, user);
";

impl BudgetLedger {
    /// Opens (or creates) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                EngineError::Setup(format!(
                    "the privacy budget ledger's folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let connection = Connection::open(path).map_err(ledger_error)?;
        Self::with_connection(connection, Some(path.to_path_buf()))
    }

    /// A ledger in memory, for tests and tools whose charges need not last.
    pub fn in_memory() -> Result<Self, EngineError> {
        let connection = Connection::open_in_memory().map_err(ledger_error)?;
        Self::with_connection(connection, None)
    }

    fn with_connection(connection: Connection, path: Option<PathBuf>) -> Result<Self, EngineError> {
        // Another process holding the write lock makes this one wait, not
        // fail: a charge is short.
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(ledger_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(ledger_error)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(ledger_error)?;
        connection.execute_batch(SCHEMA).map_err(ledger_error)?;
        Ok(Self {
            path,
            connection: Mutex::new(connection),
        })
    }

    /// The connection, for one call at a time in this process (SQLite's
    /// own lock serialises processes).
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, EngineError> {
        self.connection
            .lock()
            .map_err(|_| EngineError::internal("the budget ledger's lock was poisoned"))
    }

    /// Where the ledger is, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Charges `epsilon` and `delta` to `payer` for the query `charge_id`,
    /// if the user's and the project's budgets allow it; refuses otherwise,
    /// saying what was spent, what is left and what the query needs. A
    /// charge already recorded for `charge_id` (a retry) is returned as it
    /// is, and charged once. Blocks on disk I/O: call it off async threads.
    pub fn charge(
        &self,
        payer: &Payer<'_>,
        charge_id: &str,
        epsilon: f64,
        delta: f64,
        limits: &BudgetLimits,
    ) -> Result<Charge, EngineError> {
        let need_epsilon = micro_epsilon(epsilon);
        let need_delta = delta_units(delta);
        let mut connection = self.lock()?;
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ledger_error)?;
        let known: Option<(String, String, i64, i64)> = tx
            .query_row(
                "SELECT user, project, micro_epsilon, delta_units FROM charges WHERE charge_id = ?1",
                params![charge_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(ledger_error)?;
        let (user_spent, user_delta_spent) = spent(&tx, payer.project, Some(payer.user))?;
        let (project_spent, _) = spent(&tx, payer.project, None)?;
        if let Some((user, project, micro, units)) = known {
            if user != payer.user || project != payer.project {
                return Err(EngineError::internal(
                    "a charge id was reused by another user or project",
                ));
            }
            return Ok(charge_of(
                charge_id,
                micro,
                units,
                user_spent,
                project_spent,
                user_delta_spent,
                limits,
            ));
        }
        let user_budget = Some(micro_epsilon_floor(limits.user_epsilon));
        fits("your", Unit::Epsilon, user_spent, user_budget, need_epsilon)?;
        let project_budget = limits.project_epsilon.map(micro_epsilon_floor);
        fits(
            "the project's",
            Unit::Epsilon,
            project_spent,
            project_budget,
            need_epsilon,
        )?;
        let delta_budget = limits.user_delta.map(delta_units_floor);
        fits(
            "your",
            Unit::Delta,
            user_delta_spent,
            delta_budget,
            need_delta,
        )?;
        tx.execute(
            "INSERT INTO charges (charge_id, user, project, micro_epsilon, delta_units, charged_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                charge_id,
                payer.user,
                payer.project,
                need_epsilon,
                need_delta,
                chrono::Utc::now().to_rfc3339(),
            ],
        )
        .map_err(ledger_error)?;
        tx.commit().map_err(ledger_error)?;
        Ok(charge_of(
            charge_id,
            need_epsilon,
            need_delta,
            user_spent + need_epsilon,
            project_spent + need_epsilon,
            user_delta_spent + need_delta,
            limits,
        ))
    }

    /// What is left to `payer` without charging anything: ε of the user, of
    /// the project if limited, and δ of the user if limited.
    pub fn left(
        &self,
        payer: &Payer<'_>,
        limits: &BudgetLimits,
    ) -> Result<(f64, Option<f64>, Option<f64>), EngineError> {
        let connection = self.lock()?;
        let (user_spent, user_delta_spent) = spent(&connection, payer.project, Some(payer.user))?;
        let (project_spent, _) = spent(&connection, payer.project, None)?;
        let charge = charge_of(
            "",
            0,
            0,
            user_spent,
            project_spent,
            user_delta_spent,
            limits,
        );
        Ok((
            charge.user_epsilon_left,
            charge.project_epsilon_left,
            charge.user_delta_left,
        ))
    }

    /// Every user's spending by project, then each project's total; only
    /// `user`'s when given.
    pub fn spending(&self, user: Option<&str>) -> Result<Vec<Spending>, EngineError> {
        let connection = self.lock()?;
        let mut out = Vec::new();
        let mut by_user = connection
            .prepare(
                "SELECT user, project, count(*), sum(micro_epsilon), sum(delta_units) FROM charges
                 WHERE ?1 IS NULL OR user = ?1 GROUP BY user, project ORDER BY user, project",
            )
            .map_err(ledger_error)?;
        let rows = by_user
            .query_map(params![user], |row| {
                Ok(Spending {
                    user: Some(row.get(0)?),
                    project: row.get(1)?,
                    queries: row.get::<_, i64>(2)?.max(0) as u64,
                    epsilon: epsilon_of(row.get(3)?),
                    delta: delta_of(row.get(4)?),
                })
            })
            .map_err(ledger_error)?;
        for row in rows {
            out.push(row.map_err(ledger_error)?);
        }
        if user.is_none() {
            let mut by_project = connection
                .prepare(
                    "SELECT project, count(*), sum(micro_epsilon), sum(delta_units) FROM charges
                     GROUP BY project ORDER BY project",
                )
                .map_err(ledger_error)?;
            let rows = by_project
                .query_map([], |row| {
                    Ok(Spending {
                        user: None,
                        project: row.get(0)?,
                        queries: row.get::<_, i64>(1)?.max(0) as u64,
                        epsilon: epsilon_of(row.get(2)?),
                        delta: delta_of(row.get(3)?),
                    })
                })
                .map_err(ledger_error)?;
            for row in rows {
                out.push(row.map_err(ledger_error)?);
            }
        }
        Ok(out)
    }

    /// The sum of every charge, with their number: what a check of the
    /// ledger against a budget reads.
    pub fn total(&self) -> Result<(u64, i64), EngineError> {
        let connection = self.lock()?;
        connection
            .query_row(
                "SELECT count(*), coalesce(sum(micro_epsilon), 0) FROM charges",
                [],
                |row| Ok((row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?)),
            )
            .map_err(ledger_error)
    }

    /// Whether the database passes SQLite's own integrity check.
    pub fn check_integrity(&self) -> Result<bool, EngineError> {
        let connection = self.lock()?;
        connection
            .query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))
            .map(|verdict| verdict == "ok")
            .map_err(ledger_error)
    }

    /// Whether a charge for `charge_id` is recorded.
    pub fn has_charge(&self, charge_id: &str) -> Result<bool, EngineError> {
        let connection = self.lock()?;
        connection
            .query_row(
                "SELECT 1 FROM charges WHERE charge_id = ?1",
                params![charge_id],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(ledger_error)
    }
}

/// A budget as the ledger compares it: rounded down, so that rounding never
/// lets a user spend more than the policy gives.
fn micro_epsilon_floor(budget: f64) -> i64 {
    budget_units(budget, EPSILON_UNIT)
}

fn delta_units_floor(budget: f64) -> i64 {
    budget_units(budget, DELTA_UNIT)
}

fn budget_units(budget: f64, unit: f64) -> i64 {
    let units = (budget * unit).floor();
    if units.is_finite() && units >= 0.0 && units < i64::MAX as f64 {
        units as i64
    } else if units >= i64::MAX as f64 {
        i64::MAX
    } else {
        0
    }
}

/// ε and δ spent in `project`, by `user` or by everyone.
fn spent(
    connection: &Connection,
    project: &str,
    user: Option<&str>,
) -> Result<(i64, i64), EngineError> {
    connection
        .query_row(
            "SELECT coalesce(sum(micro_epsilon), 0), coalesce(sum(delta_units), 0) FROM charges
             WHERE project = ?1 AND (?2 IS NULL OR user = ?2)",
            params![project, user],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(ledger_error)
}

fn charge_of(
    charge_id: &str,
    micro: i64,
    units: i64,
    user_spent: i64,
    project_spent: i64,
    user_delta_spent: i64,
    limits: &BudgetLimits,
) -> Charge {
    let left = |budget: i64, spent: i64| epsilon_of(budget.saturating_sub(spent).max(0));
    Charge {
        charge_id: charge_id.to_string(),
        epsilon: epsilon_of(micro),
        delta: delta_of(units),
        user_epsilon_left: left(micro_epsilon_floor(limits.user_epsilon), user_spent),
        project_epsilon_left: limits
            .project_epsilon
            .map(|b| left(micro_epsilon_floor(b), project_spent)),
        user_delta_left: limits
            .user_delta
            .map(|b| delta_of(delta_units_floor(b).saturating_sub(user_delta_spent).max(0))),
    }
}

/// The unit of a budget's integer amounts.
#[derive(Clone, Copy)]
enum Unit {
    /// Micro-ε.
    Epsilon,
    /// δ in units of 10⁻¹⁵.
    Delta,
}

impl Unit {
    fn amount(self, units: i64) -> f64 {
        match self {
            Self::Epsilon => epsilon_of(units),
            Self::Delta => delta_of(units),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Self::Epsilon => "ε",
            Self::Delta => "δ",
        }
    }
}

/// Whether `need` more fits in `whose` budget (`None`: unlimited) with
/// `spent` spent; the refusal says how much was spent, how much is left and
/// what the query needs, all in `unit`.
fn fits(
    whose: &str,
    unit: Unit,
    spent: i64,
    budget: Option<i64>,
    need: i64,
) -> Result<(), EngineError> {
    let Some(budget) = budget else {
        return Ok(());
    };
    if spent.saturating_add(need) <= budget {
        return Ok(());
    }
    let (spent, left, needs, what) = (
        unit.amount(spent),
        unit.amount(budget.saturating_sub(spent).max(0)),
        unit.amount(need),
        unit.symbol(),
    );
    Err(EngineError::refused(
        Rule::Budget,
        format!(
            "{whose} privacy budget is spent: {spent} {what} spent, {left} {what} left, and the query needs {needs} {what}; nothing was read"
        ),
        "ask the project's data protection officer for more budget, or reuse results already released",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BudgetLimits = BudgetLimits {
        user_epsilon: 3.0,
        project_epsilon: Some(5.0),
        user_delta: None,
    };

    fn payer(user: &str) -> Payer<'_> {
        Payer {
            user,
            project: "public",
        }
    }

    #[test]
    fn charges_until_the_budget_is_spent_then_refuses() {
        let ledger = BudgetLedger::in_memory().unwrap();
        for i in 0..3 {
            let charge = ledger
                .charge(&payer("bob"), &format!("q{i}"), 1.0, 1e-7, &LIMITS)
                .unwrap();
            assert_eq!(charge.user_epsilon_left, 2.0 - f64::from(i));
        }
        let refused = ledger
            .charge(&payer("bob"), "q3", 1.0, 1e-7, &LIMITS)
            .unwrap_err();
        let text = refused.to_string();
        assert!(text.contains("3 ε spent, 0 ε left"), "{text}");
        assert!(!ledger.has_charge("q3").unwrap());
    }

    #[test]
    fn a_retried_charge_is_counted_once() {
        let ledger = BudgetLedger::in_memory().unwrap();
        let first = ledger
            .charge(&payer("bob"), "q", 1.0, 0.0, &LIMITS)
            .unwrap();
        let again = ledger
            .charge(&payer("bob"), "q", 1.0, 0.0, &LIMITS)
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(ledger.total().unwrap(), (1, 1_000_000));
    }

    #[test]
    fn the_project_budget_holds_across_users() {
        let ledger = BudgetLedger::in_memory().unwrap();
        for (i, user) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            ledger
                .charge(&payer(user), &format!("q{i}"), 1.0, 0.0, &LIMITS)
                .unwrap();
        }
        let refused = ledger
            .charge(&payer("f"), "q5", 1.0, 0.0, &LIMITS)
            .unwrap_err();
        assert!(refused.to_string().contains("the project's"));
    }

    #[test]
    fn amounts_round_up_and_budgets_down() {
        assert_eq!(micro_epsilon(1e-7), 1);
        assert_eq!(micro_epsilon(0.1 + 0.2), 300_001);
        assert_eq!(micro_epsilon_floor(0.1 + 0.2), 300_000);
        assert_eq!(delta_units(1e-7), 100_000_000);
    }

    #[test]
    fn charges_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budget.sqlite");
        {
            let ledger = BudgetLedger::open(&path).unwrap();
            ledger
                .charge(&payer("bob"), "q", 2.5, 0.0, &LIMITS)
                .unwrap();
        }
        let ledger = BudgetLedger::open(&path).unwrap();
        let (left, _, _) = ledger.left(&payer("bob"), &LIMITS).unwrap();
        assert_eq!(left, 0.5);
        assert_eq!(ledger.spending(Some("bob")).unwrap()[0].queries, 1);
    }
}
