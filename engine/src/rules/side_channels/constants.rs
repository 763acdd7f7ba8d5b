//! Constants: the parts of an expression that read no column are evaluated
//! once, while the query is checked. A constant that fails (`abs` of a
//! smallint's minimum, a date part that does not exist, a LIKE pattern that
//! does not compile) would fail at run time only on the rows a `CASE` sends
//! to it, that is depending on which persons exist; failing at planning it
//! fails for every database alike, and is refused.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{ColumnarValue, Expr, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::create_physical_expr;

use crate::error::place_of;
use crate::error::{Refusal, Rule};

/// True when `expr` reads no column and runs the same way on every row.
fn is_constant(expr: &Expr) -> bool {
    let mut constant = true;
    let _ = expr.apply(|e| {
        let varies = match e {
            Expr::Column(_)
            | Expr::OuterReferenceColumn(..)
            | Expr::AggregateFunction(_)
            | Expr::WindowFunction(_)
            | Expr::Placeholder(_)
            | Expr::ScalarVariable(..)
            | Expr::ScalarSubquery(_)
            | Expr::InSubquery(_)
            | Expr::Exists(_)
            | Expr::Unnest(_) => true,
            Expr::ScalarFunction(function) => {
                function.func.signature().volatility == Volatility::Volatile
            }
            _ => false,
        };
        if varies {
            constant = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    constant
}

/// Evaluates a constant expression on one row, as the query would: after
/// DataFusion's simplifier, which some functions need (`coalesce` and
/// `now` are rewritten by it, never run as such).
fn evaluate(expr: &Expr) -> Result<ScalarValue, String> {
    let schema = DFSchema::empty();
    let props = ExecutionProps::new();
    let context = SimplifyContext::builder().with_current_time().build();
    let simplified = ExprSimplifier::new(context)
        .simplify(expr.clone())
        .map_err(|e| e.message().to_string())?;
    if let Expr::Literal(value, _) = simplified {
        return Ok(value);
    }
    let physical = create_physical_expr(
        &simplified,
        &schema,
        &props,
        &PhysicalPlanningContext::default(),
    )
    .map_err(|e| e.message().to_string())?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| e.to_string())?;
    match physical
        .evaluate(&batch)
        .map_err(|e| e.message().to_string())?
    {
        ColumnarValue::Scalar(value) => Ok(value),
        ColumnarValue::Array(array) => {
            ScalarValue::try_from_array(&array, 0).map_err(|e| e.message().to_string())
        }
    }
}

/// The value of a constant expression, if it is one and it evaluates.
pub fn constant_value(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value.clone()),
        other if is_constant(other) => evaluate(other).ok(),
        _ => None,
    }
}

/// How many days an interval constant spans at most (a month as 31 days),
/// rounded up.
pub fn interval_days(value: &ScalarValue) -> Option<i64> {
    let days = match value {
        ScalarValue::IntervalYearMonth(Some(months)) => i64::from(*months).abs() * 31,
        ScalarValue::IntervalDayTime(Some(v)) => {
            i64::from(v.days).abs() + i64::from(v.milliseconds).abs() / 86_400_000 + 1
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            i64::from(v.months).abs() * 31
                + i64::from(v.days).abs()
                + (v.nanoseconds / 86_400_000_000_000).abs()
                + 1
        }
        _ => return None,
    };
    Some(days)
}

/// Refuses an expression one of whose constant parts fails. The expression
/// is the neutralised one: its guards already turn data-dependent failures
/// into NULL, so what fails here fails on constants alone.
pub fn check_constants(expr: &Expr) -> Result<(), Refusal> {
    let mut failure = None;
    let _ = expr.apply(|e| {
        if matches!(e, Expr::Literal(..)) {
            return Ok(TreeNodeRecursion::Jump);
        }
        if is_constant(e) {
            if evaluate(e).is_err() {
                failure = Some(
                    Refusal::new(
                        Rule::SideChannels,
                        format!("{e} fails on its own constants"),
                        "change the constants so that the expression can be computed",
                    )
                    .at(place_of(e)),
                );
                return Ok(TreeNodeRecursion::Stop);
            }
            // Its parts are constants too, and evaluated with it.
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    failure.map_or(Ok(()), Err)
}
