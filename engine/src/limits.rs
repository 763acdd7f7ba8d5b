//! Limits on the size of a query, checked on its text and syntax tree before
//! anything is planned: planning, the privacy rewrite and DataFusion's own
//! passes walk the plan recursively and in proportion to its size, so one
//! small request (a 500-branch `UNION ALL`, a 2,000-term sum, a `CUBE` of 20
//! expressions) could otherwise exhaust the stack, the memory or the time
//! of the whole server.
//!
//! The syntax tree is walked with an early stop: as soon as a limit is
//! passed the walk ends, so even the walk's own recursion stays within the
//! limits it enforces.

use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Query, Select, SetExpr, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use tokio::time::Instant;

use crate::error::EngineError;

/// Most distinct grouping expressions of one table with margins: cell masks
/// are 64-bit, and each dimension doubles what `CUBE` expands to.
pub const MAX_GROUPING_DIMENSIONS: usize = 16;

/// Most grouping sets of one aggregate (a `CUBE` of 8 expressions).
pub const MAX_GROUPING_SETS: usize = 256;

/// Most cells of one table with margins: the attacker's linear programs
/// grow with them.
pub const MAX_MARGIN_CELLS: usize = 50_000;

/// How large a query may be. The defaults let any statistician's query
/// through, with an order of magnitude to spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Words, numbers, strings and symbols of the SQL text.
    pub max_tokens: usize,
    /// Depth of nested expressions (`a + (b * f(c))` is 3 deep).
    pub max_expression_depth: usize,
    /// Joined tables in one FROM clause, over the whole query.
    pub max_joins: usize,
    /// Branches of `UNION`, `INTERSECT` and `EXCEPT`, over the whole query.
    pub max_set_branches: usize,
    /// Values of one `IN (...)` list.
    pub max_in_list: usize,
    /// Grouping sets of one `GROUP BY`, once `ROLLUP` and `CUBE` are
    /// expanded.
    pub max_grouping_sets: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_tokens: 20_000,
            max_expression_depth: 200,
            max_joins: 32,
            max_set_branches: 64,
            max_in_list: 2_000,
            max_grouping_sets: MAX_GROUPING_SETS,
        }
    }
}

fn limit(message: String) -> EngineError {
    EngineError::Limit(message)
}

/// Refuses a SQL text of too many tokens. Tokenizing does not recurse.
pub fn check_text(sql: &str, limits: &QueryLimits) -> Result<(), EngineError> {
    let dialect = GenericDialect {};
    // A text that does not tokenize is for the parser to report.
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return Ok(());
    };
    let count = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .count();
    if count > limits.max_tokens {
        return Err(limit(format!(
            "the query has {count} tokens; the limit is {}",
            limits.max_tokens
        )));
    }
    Ok(())
}

struct SizeVisitor<'a> {
    limits: &'a QueryLimits,
    depth: usize,
    joins: usize,
    branches: usize,
}

impl SizeVisitor<'_> {
    fn check(&self, what: &str, count: usize, max: usize) -> ControlFlow<EngineError> {
        if count > max {
            // The walk stops at the first excess: `count` may not be the
            // query's whole count.
            ControlFlow::Break(limit(format!("the query has more than {max} {what}")))
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// The branches of a set operation, counted without recursing into
/// subqueries (which the visitor meets on its own).
fn set_branches(body: &SetExpr) -> usize {
    let mut count = 0;
    let mut pending = vec![body];
    while let Some(expr) = pending.pop() {
        match expr {
            SetExpr::SetOperation { left, right, .. } => {
                pending.push(left);
                pending.push(right);
            }
            _ => count += 1,
        }
    }
    count
}

/// The grouping sets one `GROUP BY` asks for, saturating.
fn grouping_sets(select: &Select) -> (usize, usize) {
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return (1, 0);
    };
    let mut sets: usize = 1;
    let mut expressions = 0;
    for expr in exprs {
        let (factor, count) = match expr {
            Expr::Cube(items) => {
                let n: usize = items.iter().map(Vec::len).sum();
                (
                    1usize.checked_shl(items.len() as u32).unwrap_or(usize::MAX),
                    n,
                )
            }
            Expr::Rollup(items) => (items.len() + 1, items.iter().map(Vec::len).sum()),
            Expr::GroupingSets(items) => (items.len().max(1), items.iter().map(Vec::len).sum()),
            _ => (1, 1),
        };
        sets = sets.saturating_mul(factor);
        expressions += count;
    }
    (sets, expressions)
}

impl Visitor for SizeVisitor<'_> {
    type Break = EngineError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<EngineError> {
        self.branches += set_branches(&query.body).saturating_sub(1);
        self.check(
            "branches of UNION, INTERSECT or EXCEPT",
            self.branches + 1,
            self.limits.max_set_branches,
        )
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<EngineError> {
        let (sets, _) = grouping_sets(select);
        self.check(
            "grouping sets in one GROUP BY",
            sets,
            self.limits.max_grouping_sets,
        )
    }

    fn pre_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<EngineError> {
        self.joins += 1;
        self.check(
            "tables and subqueries in FROM clauses",
            self.joins,
            self.limits.max_joins + 1,
        )
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<EngineError> {
        self.depth += 1;
        self.check(
            "levels of nested expressions",
            self.depth,
            self.limits.max_expression_depth,
        )?;
        if let Expr::InList { list, .. } = expr {
            self.check("values in one IN list", list.len(), self.limits.max_in_list)?;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<EngineError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Refuses a parsed statement past the limits.
pub fn check_statement(statement: &DfStatement, limits: &QueryLimits) -> Result<(), EngineError> {
    let DfStatement::Statement(inner) = statement else {
        return Ok(());
    };
    let mut visitor = SizeVisitor {
        limits,
        depth: 0,
        joins: 0,
        branches: 0,
    };
    match inner.visit(&mut visitor) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Thirty years: the deadline of a query whose configured timeout is too
/// large to represent.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// When a query must be done by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    seconds: u64,
}

impl Deadline {
    /// `seconds` from now.
    pub fn after(seconds: u64) -> Self {
        let now = Instant::now();
        Self {
            // A timeout too large to represent means no timeout in practice.
            at: now
                .checked_add(Duration::from_secs(seconds))
                .unwrap_or_else(|| now + FAR_FUTURE),
            seconds,
        }
    }

    /// The instant.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The timeout it was set with, in seconds.
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    /// The error of a query stopped by this deadline.
    pub fn exceeded(&self) -> EngineError {
        EngineError::Limit(format!(
            "the query ran longer than {} seconds and was stopped; narrow it or aggregate more",
            self.seconds
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn check(sql: &str, limits: &QueryLimits) -> Result<(), EngineError> {
        check_text(sql, limits)?;
        let statements = DFParser::parse_sql(sql).expect("SQL that parses");
        check_statement(&statements[0], limits)
    }

    fn refused(sql: &str, limits: &QueryLimits, what: &str) {
        match check(sql, limits) {
            Err(EngineError::Limit(message)) => assert!(message.contains(what), "{message}"),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn each_limit_refuses_just_past_it() {
        let limits = QueryLimits {
            max_tokens: 60,
            max_expression_depth: 5,
            max_joins: 2,
            max_set_branches: 2,
            max_in_list: 3,
            max_grouping_sets: 4,
        };
        let ok = "SELECT a FROM t JOIN u ON t.x = u.x JOIN v ON u.x = v.x WHERE a IN (1, 2, 3) GROUP BY ROLLUP(a, b, c)";
        assert!(check(ok, &limits).is_ok());
        refused(
            &format!("SELECT 1 {}", "+ 1 ".repeat(40)),
            &limits,
            "tokens",
        );
        refused(
            "SELECT ((((((a))))))",
            &limits,
            "levels of nested expressions",
        );
        refused(
            "SELECT a FROM t JOIN u ON t.x = u.x JOIN v ON u.x = v.x JOIN w ON v.x = w.x",
            &limits,
            "tables and subqueries",
        );
        refused(
            "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3",
            &limits,
            "branches",
        );
        refused(
            "SELECT a FROM t WHERE a IN (1, 2, 3, 4)",
            &limits,
            "IN list",
        );
        refused(
            "SELECT a FROM t GROUP BY CUBE(a, b, c)",
            &limits,
            "grouping sets",
        );
        refused(
            "SELECT a FROM t GROUP BY ROLLUP(a), ROLLUP(b, c)",
            &limits,
            "grouping sets",
        );
    }
}
