//! Prepared statements, as ADBC and JDBC use them for every query: created
//! with the query's result and parameter schemas, bound by `DoPut`, run by
//! `GetFlightInfo` and `DoGet`, closed by the client.
//!
//! A statement belongs to the user who created it: a handle is a random
//! name, and another user's handle is as unknown as a made-up one. Clients
//! that never close their statements cannot grow the server without bound:
//! each user holds at most [`MAX_PER_USER`], and statements unused for
//! [`IDLE`] are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::status::ServerError;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::scalar::ScalarValue;
use tonic::Status;

/// Most open statements per user.
pub const MAX_PER_USER: usize = 256;
/// How long an unused statement is kept.
pub const IDLE: Duration = Duration::from_secs(3600);

/// One prepared statement.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Who created it.
    pub owner: String,
    /// The SQL as the client sent it (numbered for the engine when run).
    pub sql: String,
    /// The parameters the query takes.
    pub parameters: SchemaRef,
    /// The schema of its result.
    pub result: SchemaRef,
    /// The values bound by the last `DoPut`.
    pub bound: Option<Vec<ScalarValue>>,
    /// The id of its check in [`super::kept::KeptChecks`], for its first
    /// run (a statement without parameters).
    pub kept: Option<String>,
    last_used: Instant,
}

impl Statement {
    /// A statement not yet bound.
    pub fn new(owner: &str, sql: &str, parameters: SchemaRef, result: SchemaRef) -> Self {
        Self {
            owner: owner.to_string(),
            sql: sql.to_string(),
            parameters,
            result,
            bound: None,
            kept: None,
            last_used: Instant::now(),
        }
    }

    /// The values to run it with: none for a query without parameters, the
    /// bound ones otherwise.
    pub fn values(&self) -> Result<Vec<ScalarValue>, Status> {
        if self.parameters.fields().is_empty() {
            return Ok(Vec::new());
        }
        self.bound.clone().ok_or_else(|| {
            Status::from(ServerError::BadRequest(format!(
                "the prepared query has {} parameters: bind their values with DoPut before running it",
                self.parameters.fields().len()
            )))
        })
    }
}

/// The open statements of all users.
#[derive(Debug, Clone, Default)]
pub struct Statements {
    open: Arc<Mutex<HashMap<String, Statement>>>,
}

fn unknown() -> Status {
    Status::from(ServerError::BadRequest("unknown prepared statement handle: it was closed or never created; prepare the query again".into()))
}

impl Statements {
    /// Stores a statement; returns its handle.
    pub fn insert(&self, statement: Statement) -> Result<String, Status> {
        let mut open = self.lock()?;
        let now = Instant::now();
        open.retain(|_, s| now.duration_since(s.last_used) < IDLE);
        let owned = open.values().filter(|s| s.owner == statement.owner).count();
        if owned >= MAX_PER_USER {
            return Err(Status::from(ServerError::Busy(format!(
                "limit reached: you have {owned} prepared statements open; close some before preparing more"
            ))));
        }
        let handle = hex::encode(rand::random::<[u8; 16]>());
        open.insert(handle.clone(), statement);
        Ok(handle)
    }

    /// A copy of the user's statement.
    pub fn get(&self, user: &str, handle: &[u8]) -> Result<Statement, Status> {
        let mut open = self.lock()?;
        let statement = open
            .get_mut(handle_text(handle)?)
            .filter(|s| s.owner == user)
            .ok_or_else(unknown)?;
        statement.last_used = Instant::now();
        Ok(statement.clone())
    }

    /// Binds values to the user's statement.
    pub fn bind(&self, user: &str, handle: &[u8], values: Vec<ScalarValue>) -> Result<(), Status> {
        let mut open = self.lock()?;
        let statement = open
            .get_mut(handle_text(handle)?)
            .filter(|s| s.owner == user)
            .ok_or_else(unknown)?;
        statement.bound = Some(values);
        statement.last_used = Instant::now();
        Ok(())
    }

    /// Closes the user's statement. Closing one that is already gone is not
    /// an error: clients close on every path, sometimes twice.
    pub fn close(&self, user: &str, handle: &[u8]) -> Result<(), Status> {
        let mut open = self.lock()?;
        let key = handle_text(handle)?;
        if open.get(key).is_some_and(|s| s.owner == user) {
            open.remove(key);
        }
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Statement>>, Status> {
        self.open.lock().map_err(|_| {
            Status::from(ServerError::Unavailable(
                "the prepared statements are unavailable",
            ))
        })
    }
}

fn handle_text(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle).map_err(|_| unknown())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn statement(owner: &str, parameters: usize) -> Statement {
        let fields: Vec<Field> = (1..=parameters)
            .map(|i| Field::new(i.to_string(), DataType::Int64, true))
            .collect();
        Statement::new(
            owner,
            "SELECT 1",
            Arc::new(Schema::new(fields)),
            Arc::new(Schema::empty()),
        )
    }

    #[test]
    fn a_statement_is_its_owners_only() {
        let statements = Statements::default();
        let handle = statements.insert(statement("alice", 1)).unwrap();
        assert!(statements.get("alice", handle.as_bytes()).is_ok());
        assert!(statements.get("bob", handle.as_bytes()).is_err());
        statements.close("bob", handle.as_bytes()).unwrap();
        assert!(statements.get("alice", handle.as_bytes()).is_ok());
        statements.close("alice", handle.as_bytes()).unwrap();
        assert!(statements.get("alice", handle.as_bytes()).is_err());
    }

    #[test]
    fn parameters_must_be_bound_before_running() {
        let statements = Statements::default();
        let handle = statements.insert(statement("alice", 1)).unwrap();
        let unbound = statements.get("alice", handle.as_bytes()).unwrap();
        assert_eq!(
            unbound.values().unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        statements
            .bind(
                "alice",
                handle.as_bytes(),
                vec![ScalarValue::Int64(Some(3))],
            )
            .unwrap();
        let bound = statements.get("alice", handle.as_bytes()).unwrap();
        assert_eq!(bound.values().unwrap(), vec![ScalarValue::Int64(Some(3))]);
        assert!(statement("alice", 0).values().unwrap().is_empty());
    }

    #[test]
    fn a_user_cannot_open_statements_without_bound() {
        let statements = Statements::default();
        for _ in 0..MAX_PER_USER {
            statements.insert(statement("alice", 0)).unwrap();
        }
        assert_eq!(
            statements.insert(statement("alice", 0)).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert!(statements.insert(statement("carol", 0)).is_ok());
    }
}
