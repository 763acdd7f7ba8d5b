//! Rule 4, identifiers never leave.
//!
//! > Columns classed `identifier` may be used in joins, in
//! > `COUNT(DISTINCT ...)` and in per-person subqueries. They may never be
//! > selected, grouped on in the released result, compared with literals,
//! > ordered on, or passed to functions whose output is released. Any
//! > expression computed from an identifier is an identifier, wherever it
//! > appears (group keys of per-person subqueries included).
//!
//! The rewrite tracks which output columns of each private relation hold
//! identifiers (a bare column passed through a projection or kept as a
//! group key stays one). An identifier may appear only as a bare column:
//! passed through, used as a join key against another identifier, tested
//! for NULL, counted, or used as a group or partition key of a per-person
//! step. Anything else that touches it (a comparison with a literal, a
//! function, a cast, an arithmetic operator, an ordering) is refused
//! wherever it appears: in projections, filters, join conditions, group
//! keys of per-person steps and released aggregates, aggregate arguments,
//! window functions and sorts. So no expression of an identifier ever
//! reaches a column that is not itself tracked as an identifier.

use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::error::place_of_column;
use crate::error::{Refusal, Rule};
use crate::functions::KnownAggregate;
use crate::lineage::{PersonLineage, bare_column};

/// The first identifier column an expression references, if any.
pub fn first_identifier<'a>(expr: &'a Expr, lineage: &PersonLineage) -> Option<&'a Column> {
    let mut found = None;
    let _ = expr.apply(|e| {
        if let Expr::Column(column) = e
            && lineage.is_identifier(column)
        {
            found = Some(column);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn refusal(column: &Column, what: &str, hint: &str) -> Refusal {
    Refusal::new(
        Rule::Identifiers,
        format!("column {} is an identifier and {what}", column.name),
        hint,
    )
    .at(place_of_column(column))
}

const IDENTIFIER_USES: &str = "identifiers may be used to join tables, in COUNT(DISTINCT ...), and as the GROUP BY key of a per-person subquery";

/// An expression computed from a value: only bare identifiers may pass.
pub fn check_value(expr: &Expr, lineage: &PersonLineage) -> Result<(), Refusal> {
    if bare_column(expr).is_some() {
        return Ok(());
    }
    match first_identifier(expr, lineage) {
        None => Ok(()),
        Some(column) => Err(refusal(
            column,
            "cannot be passed to a function or an operator",
            IDENTIFIER_USES,
        )),
    }
}

/// A sort key over private rows: ordering by an identifier selects persons
/// by their identifier (`ORDER BY ben_nir_psa LIMIT 30`), as a comparison
/// with a literal would.
pub fn check_order(expr: &Expr, lineage: &PersonLineage) -> Result<(), Refusal> {
    match first_identifier(expr, lineage) {
        None => Ok(()),
        Some(column) => Err(refusal(
            column,
            "cannot be ordered on: an order of identifiers picks out persons by their identifier",
            "order on describing columns or on aggregates",
        )),
    }
}

/// A filter or join condition: each conjunct may compare two identifiers for
/// equality or test one for NULL; any other use is refused.
pub fn check_condition(predicate: &Expr, lineage: &PersonLineage) -> Result<(), Refusal> {
    for conjunct in datafusion::logical_expr::utils::split_conjunction(predicate) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => {
                let left_id = bare_column(left).filter(|c| lineage.is_identifier(c));
                let right_id = bare_column(right).filter(|c| lineage.is_identifier(c));
                match (left_id, right_id) {
                    (Some(_), Some(_)) => continue,
                    (Some(column), None) | (None, Some(column)) => {
                        return Err(refusal(
                            column,
                            "can only be matched with another identifier, never compared with a literal or another value",
                            IDENTIFIER_USES,
                        ));
                    }
                    (None, None) => {}
                }
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) if bare_column(inner).is_some() => {
                continue;
            }
            _ => {}
        }
        if let Some(column) = first_identifier(conjunct, lineage) {
            return Err(refusal(
                column,
                "cannot be compared with a literal or passed to a function",
                IDENTIFIER_USES,
            ));
        }
    }
    Ok(())
}

/// An equi-join key pair: an identifier may only be matched with an identifier.
pub fn check_join_key(
    left: &Expr,
    left_lineage: Option<&PersonLineage>,
    right: &Expr,
    right_lineage: Option<&PersonLineage>,
) -> Result<(), Refusal> {
    let is_id = |expr: &Expr, lineage: Option<&PersonLineage>| {
        lineage.and_then(|l| bare_column(expr).filter(|c| l.is_identifier(c)).cloned())
    };
    let left_id = is_id(left, left_lineage);
    let right_id = is_id(right, right_lineage);
    for (expr, lineage) in [(left, left_lineage), (right, right_lineage)] {
        if let Some(lineage) = lineage
            && bare_column(expr).is_none()
            && let Some(column) = first_identifier(expr, lineage)
        {
            return Err(refusal(
                column,
                "cannot be passed to a function in a join condition",
                IDENTIFIER_USES,
            ));
        }
    }
    match (left_id, right_id) {
        (Some(column), None) | (None, Some(column)) => Err(refusal(
            &column,
            "can only be matched with another identifier",
            IDENTIFIER_USES,
        )),
        _ => Ok(()),
    }
}

/// A group key of the released result: identifiers are refused.
pub fn check_released_group_key(expr: &Expr, lineage: &PersonLineage) -> Result<(), Refusal> {
    match first_identifier(expr, lineage) {
        None => Ok(()),
        Some(column) => Err(refusal(
            column,
            "cannot be grouped on in a released result: each group would describe one person",
            "group on describing columns (age, place, date, code); count persons with COUNT(DISTINCT ...)",
        )),
    }
}

/// An aggregate function's arguments: identifiers only inside `count`.
pub fn check_aggregate(expr: &Expr, lineage: &PersonLineage) -> Result<(), Refusal> {
    let mut outcome = Ok(());
    let _ = expr.apply(|e| {
        if let Expr::AggregateFunction(function) = e {
            if KnownAggregate::of(function) == KnownAggregate::Count {
                // count(identifier) and count(DISTINCT identifier) only count values.
                for argument in &function.params.args {
                    if let Err(r) = check_value(argument, lineage) {
                        outcome = Err(r);
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                if let Some(filter) = &function.params.filter
                    && let Err(r) = check_condition(filter, lineage)
                {
                    outcome = Err(r);
                    return Ok(TreeNodeRecursion::Stop);
                }
                return Ok(TreeNodeRecursion::Jump);
            }
            if let Some(column) = first_identifier(e, lineage) {
                outcome = Err(refusal(
                    column,
                    &format!("cannot be aggregated with {}", function.func.name()),
                    "identifiers can only be counted: COUNT(DISTINCT column)",
                ));
                return Ok(TreeNodeRecursion::Stop);
            }
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Expr::Column(column) = e
            && lineage.is_identifier(column)
        {
            outcome = Err(refusal(
                column,
                "cannot be combined with an aggregate's result",
                IDENTIFIER_USES,
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    outcome
}
