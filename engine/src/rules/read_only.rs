//! Queries only: seuil answers SELECT queries and nothing else.
//!
//! DDL, DML, COPY, SET, EXPLAIN and every other statement are refused before
//! planning, so that no statement can change the data, the catalog or the
//! session's settings (which could, for example, turn off the collection of
//! source positions or raise limits).

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;

use crate::error::{EngineError, Rule};

/// Refuses every statement that is not a query.
pub fn check_statement(statement: &DfStatement) -> Result<(), EngineError> {
    match statement {
        DfStatement::Statement(inner) if matches!(inner.as_ref(), Statement::Query(_)) => Ok(()),
        DfStatement::Explain(_) => Err(EngineError::refused(
            Rule::ReadOnly,
            "EXPLAIN is not run on the data",
            "use `seuil policy explain --user U \"SQL\"` to see how a query is rewritten",
        )),
        _ => Err(EngineError::refused(
            Rule::ReadOnly,
            "only queries are accepted: seuil never writes, changes settings or runs utility statements",
            "send a SELECT query",
        )),
    }
}
