//! Rule 5, no side channels.
//!
//! > Whether a query errors, how long it takes to plan, and what an error
//! > says must not depend on one person's data. Refuse or neutralise
//! > constructs that turn data into errors (division by zero, failing casts,
//! > overflow, out-of-range arguments, huge output sizes, under a `CASE` or
//! > not: literal arguments are not safe when `CASE` decides per row whether
//! > they run), and never put data values in error messages. Every output
//! > (rows, metadata, report lines, errors) is the same for a cell of 0
//! > persons and a cell of 1 to `k - 1` persons.
//!
//! Every expression of a query goes through three steps, all at planning,
//! before any data is read:
//!
//! 1. the allowlist ([`allowlist`]): each function must be on it; arguments
//!    that make a function fail for some values must be literals within a
//!    safe range; constructs whose failure cannot be guarded (decimal
//!    arithmetic that may overflow its type, interval arithmetic on data)
//!    are refused by their types;
//! 2. guards ([`guards`]): what can still fail on some data values is
//!    rewritten to give NULL for those values instead, and functions that
//!    grow their output give NULL past a size bound;
//! 3. constants ([`constants`]): the parts that read no column are
//!    evaluated once; one that fails is refused, since under a `CASE` it
//!    would fail only when some person exists.
//!
//! Planning never reads data, so acceptance, refusal and their messages
//! depend on the query and the policy only.

pub mod allowlist;
pub mod constants;
pub mod guards;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Cast, Like, TryCast};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator, lit};
use datafusion::scalar::ScalarValue;

use crate::error::place_of;
use crate::error::{Refusal, Rule};
use crate::functions::KnownAggregate;
use allowlist::{AGGREGATE_FUNCTIONS, Literal, WINDOW_FUNCTIONS, scalar_function};
use constants::{constant_value, interval_days};

/// The longest interval a date may be moved by: ten thousand years.
const MAX_INTERVAL_DAYS: i64 = 3_660_000;

fn refuse_function(kind: &str, name: &str, expr: &Expr) -> Refusal {
    Refusal::new(
        Rule::SideChannels,
        format!("{kind} function {name} is not on the allowlist"),
        "use arithmetic, CASE, COALESCE, string and date functions such as substr, lower, date_part or date_trunc; `seuil policy explain` lists what is allowed",
    )
    .at(place_of(expr))
}

fn side_channel(message: impl Into<String>, hint: &str, expr: &Expr) -> Refusal {
    Refusal::new(Rule::SideChannels, message, hint).at(place_of(expr))
}

fn is_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(..) => true,
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => is_literal(expr),
        Expr::Negative(inner) => is_literal(inner),
        _ => false,
    }
}

/// Checks one expression and rewrites what could fail on data into what
/// gives NULL instead. `schema` is the input the expression reads. For
/// predicates, join keys and sort keys, whose names nothing refers to.
pub fn neutralise(expr: Expr, schema: &DFSchema) -> Result<Expr, Refusal> {
    check_allowed(&expr, schema)?;
    let guarded = expr
        .transform_up(|e| Ok(guards::guard(e, schema)))
        .map(|t| t.data)
        .map_err(|_| {
            Refusal::new(
                Rule::SideChannels,
                "the expression could not be made safe",
                "simplify the expression",
            )
        })?;
    constants::check_constants(&guarded)?;
    Ok(guarded)
}

/// Like [`neutralise`], for expressions that name an output column
/// (projections, aggregates, window functions, group keys): the result keeps
/// the original name, so that the plan above still finds the column.
pub fn neutralise_named(expr: Expr, schema: &DFSchema) -> Result<Expr, Refusal> {
    let original_name = expr.schema_name().to_string();
    let rewritten = neutralise(expr, schema)?;
    if rewritten.schema_name().to_string() == original_name {
        Ok(rewritten)
    } else {
        Ok(rewritten.alias(original_name))
    }
}

/// Refuses functions and constructs outside the allowlists, and literal
/// arguments outside their safe ranges.
pub fn check_allowed(expr: &Expr, schema: &DFSchema) -> Result<(), Refusal> {
    let mut refusal = None;
    let _ = expr.apply(|e| match check_one(e, schema) {
        Ok(()) => Ok(TreeNodeRecursion::Continue),
        Err(r) => {
            refusal = Some(r);
            Ok(TreeNodeRecursion::Stop)
        }
    });
    refusal.map_or(Ok(()), Err)
}

fn type_of(expr: &Expr, schema: &DFSchema) -> Option<DataType> {
    expr.get_type(schema).ok()
}

fn check_one(expr: &Expr, schema: &DFSchema) -> Result<(), Refusal> {
    match expr {
        Expr::ScalarFunction(function) => check_scalar(function, expr, schema),
        Expr::AggregateFunction(function) => {
            let name = function.func.name();
            if !AGGREGATE_FUNCTIONS.contains(&name) {
                return Err(refuse_function("aggregate", name, expr));
            }
            if KnownAggregate::of(function) == KnownAggregate::Avg
                && let Some(argument) = function.params.args.first()
                && let Some(DataType::Decimal128(p, _) | DataType::Decimal256(p, _)) =
                    type_of(argument, schema)
                && p > 34
            {
                return Err(side_channel(
                    "the average of a decimal of more than 34 digits can overflow",
                    "cast the argument to DOUBLE",
                    expr,
                ));
            }
            Ok(())
        }
        Expr::WindowFunction(window) => {
            let name = window.fun.name();
            if !(WINDOW_FUNCTIONS.contains(&name) || AGGREGATE_FUNCTIONS.contains(&name)) {
                return Err(refuse_function("window", name, expr));
            }
            let (position, low, high) = match name {
                "ntile" => (0, 1, i64::MAX),
                "lag" | "lead" => (1, -1_000_000, 1_000_000),
                "nth_value" => (1, 1, i64::MAX),
                _ => return Ok(()),
            };
            match window.params.args.get(position) {
                None => Ok(()),
                Some(argument) => {
                    check_literal(name, position, argument, Literal::Between(low, high))
                }
            }
        }
        Expr::Like(like) | Expr::SimilarTo(like) => check_pattern(like, expr),
        Expr::Cast(Cast { expr: inner, field }) | Expr::TryCast(TryCast { expr: inner, field }) => {
            // TRY_CAST still fails from timestamps of seconds, milli- or
            // microseconds outside chrono's dates to dates or times.
            let from = type_of(inner, schema);
            let coarse_timestamp = matches!(
                from,
                Some(DataType::Timestamp(
                    TimeUnit::Second | TimeUnit::Millisecond | TimeUnit::Microsecond,
                    _
                ))
            );
            let to_date_or_time = matches!(
                field.data_type(),
                DataType::Date32 | DataType::Date64 | DataType::Time32(_) | DataType::Time64(_)
            );
            if coarse_timestamp && to_date_or_time {
                return Err(side_channel(
                    "a cast of a second, milli- or microsecond timestamp to a date or time can fail on far dates",
                    "cast nanosecond timestamps (TIMESTAMP), or compare timestamps directly",
                    expr,
                ));
            }
            Ok(())
        }
        Expr::BinaryExpr(binary) => check_binary(binary, expr, schema),
        Expr::Negative(inner) => {
            if let Some(DataType::Interval(_) | DataType::Duration(_)) = type_of(inner, schema)
                && constant_value(inner).is_none()
            {
                return Err(interval_refusal(expr));
            }
            Ok(())
        }
        Expr::ScalarSubquery(_)
        | Expr::InSubquery(_)
        | Expr::Exists(_)
        | Expr::SetComparison(_)
        | Expr::OuterReferenceColumn(..) => Err(Refusal::new(
            Rule::PersonLineage,
            "this subquery cannot be turned into a join, so its rows cannot be traced to persons",
            "write the subquery as a join, or as IN / EXISTS on an uncorrelated subquery",
        )
        .at(place_of(expr))),
        Expr::ScalarVariable(..) => Err(Refusal::new(
            Rule::SideChannels,
            "session variables are not available",
            "use a literal",
        )),
        Expr::Placeholder(_) => Err(Refusal::new(
            Rule::SideChannels,
            "a query parameter was not bound",
            "bind every $n parameter before running the query",
        )),
        Expr::Unnest(_)
        | Expr::HigherOrderFunction(_)
        | Expr::Lambda(_)
        | Expr::LambdaVariable(_) => Err(Refusal::new(
            Rule::SideChannels,
            "nested values (UNNEST, lambdas) are not available",
            "work on scalar columns",
        )
        .at(place_of(expr))),
        _ => Ok(()),
    }
}

fn check_literal(
    name: &str,
    position: usize,
    argument: &Expr,
    rule: Literal,
) -> Result<(), Refusal> {
    let place = place_of(argument);
    let refuse = |what: String| {
        Err(Refusal::new(
            Rule::SideChannels,
            format!(
                "argument {} of {name} must be {what}, because other values make {name} fail or grow without bound",
                position + 1
            ),
            "write that argument as a constant in that range",
        )
        .at(place))
    };
    let value = if is_literal(argument) {
        constant_value(argument)
    } else {
        None
    };
    let Some(value) = value else {
        return refuse("a literal".into());
    };
    let integer = || -> Option<i64> {
        match value.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(v) => v,
            _ => None,
        }
    };
    match rule {
        Literal::Any => Ok(()),
        Literal::Between(low, high) => match integer() {
            Some(v) if (low..=high).contains(&v) => Ok(()),
            _ => refuse(format!("an integer literal from {low} to {high}")),
        },
        Literal::NonZero => match integer() {
            Some(v) if v != 0 => Ok(()),
            _ => refuse("an integer literal other than 0".into()),
        },
        Literal::ShortText(bytes) => match &value {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) if s.len() <= bytes => {
                Ok(())
            }
            _ => refuse(format!("a text literal of at most {bytes} bytes")),
        },
    }
}

fn check_scalar(
    function: &datafusion::logical_expr::expr::ScalarFunction,
    expr: &Expr,
    schema: &DFSchema,
) -> Result<(), Refusal> {
    let name = function.name();
    let Some(entry) = scalar_function(name) else {
        return Err(refuse_function("scalar", name, expr));
    };
    for (position, rule) in entry.literals {
        if let Some(argument) = function.args.get(*position) {
            check_literal(name, *position, argument, *rule)?;
        }
    }
    let first = function.args.first().and_then(|a| type_of(a, schema));
    match name {
        "ceil" | "floor" | "round" | "trunc"
            if matches!(
                first,
                Some(DataType::Decimal128(..) | DataType::Decimal256(..))
            ) =>
        {
            Err(side_channel(
                format!("{name} of a decimal can overflow its precision"),
                "cast the argument to DOUBLE",
                expr,
            ))
        }
        "round" | "trunc" if first.as_ref().is_some_and(DataType::is_integer) => {
            let negative = function
                .args
                .get(1)
                .and_then(constant_value)
                .and_then(|v| v.cast_to(&DataType::Int64).ok())
                .is_some_and(|v| matches!(v, ScalarValue::Int64(Some(d)) if d < 0));
            if negative {
                Err(side_channel(
                    format!("{name} of an integer to negative digits can overflow"),
                    "divide the integer instead, for example x / 10 * 10",
                    expr,
                ))
            } else {
                Ok(())
            }
        }
        "date_part" | "datepart" | "extract" | "date_trunc" | "datetrunc" => {
            check_date_part(function, expr, schema)
        }
        _ => Ok(()),
    }
}

/// A date part names a unit that exists for the argument's type: checked on
/// a sample value of that type, since a wrong unit fails on every row.
fn check_date_part(
    function: &datafusion::logical_expr::expr::ScalarFunction,
    expr: &Expr,
    schema: &DFSchema,
) -> Result<(), Refusal> {
    let Some(argument_type) = function.args.get(1).and_then(|a| type_of(a, schema)) else {
        return Ok(());
    };
    if matches!(argument_type, DataType::Duration(_)) {
        return Err(side_channel(
            format!("{} of a duration can overflow", function.name()),
            "take date parts of dates and timestamps",
            expr,
        ));
    }
    let sample = match &argument_type {
        DataType::Date32 => ScalarValue::Date32(Some(10_957)),
        DataType::Date64 => ScalarValue::Date64(Some(946_684_800_000)),
        DataType::Timestamp(unit, zone) => match unit {
            TimeUnit::Second => ScalarValue::TimestampSecond(Some(946_684_800), zone.clone()),
            TimeUnit::Millisecond => {
                ScalarValue::TimestampMillisecond(Some(946_684_800_000), zone.clone())
            }
            TimeUnit::Microsecond => {
                ScalarValue::TimestampMicrosecond(Some(946_684_800_000_000), zone.clone())
            }
            TimeUnit::Nanosecond => {
                ScalarValue::TimestampNanosecond(Some(946_684_800_000_000_000), zone.clone())
            }
        },
        other => match ScalarValue::new_zero(other) {
            Ok(zero) => zero,
            Err(_) => return Ok(()),
        },
    };
    let mut args = function.args.clone();
    args[1] = lit(sample);
    let call = Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
        std::sync::Arc::clone(&function.func),
        args,
    ));
    match constant_value(&call) {
        Some(_) => Ok(()),
        None => Err(side_channel(
            format!(
                "{} is not a date part of {argument_type}",
                function
                    .args
                    .first()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            ),
            "use a part such as 'year', 'month', 'day' or 'hour'",
            expr,
        )),
    }
}

fn check_pattern(like: &Like, expr: &Expr) -> Result<(), Refusal> {
    if !is_literal(&like.pattern) {
        return Err(side_channel(
            "the pattern of LIKE must be a literal: a pattern taken from data can fail on it",
            "compare with a constant pattern such as LIKE 'I2%'",
            expr,
        ));
    }
    // A pattern that does not compile fails on every row it meets.
    let probe = Expr::Like(Like::new(
        like.negated,
        Box::new(lit("")),
        like.pattern.clone(),
        like.escape_char,
        like.case_insensitive,
    ));
    match constant_value(&probe) {
        Some(_) => Ok(()),
        None => Err(side_channel(
            "the pattern of LIKE cannot be compiled",
            "write a simpler pattern",
            expr,
        )),
    }
}

fn interval_refusal(expr: &Expr) -> Refusal {
    side_channel(
        "arithmetic on intervals or durations computed from data can overflow",
        "move dates by constant intervals, such as a date column + INTERVAL '30 days'",
        expr,
    )
}

/// Most digits a decimal type holds.
fn decimal_digits(data_type: &DataType) -> Option<(u8, i8, u8)> {
    match data_type {
        DataType::Decimal32(p, s) => Some((*p, *s, 9)),
        DataType::Decimal64(p, s) => Some((*p, *s, 18)),
        DataType::Decimal128(p, s) => Some((*p, *s, 38)),
        DataType::Decimal256(p, s) => Some((*p, *s, 76)),
        _ => None,
    }
}

fn check_binary(binary: &BinaryExpr, expr: &Expr, schema: &DFSchema) -> Result<(), Refusal> {
    let arithmetic = matches!(
        binary.op,
        Operator::Plus | Operator::Minus | Operator::Multiply | Operator::Divide | Operator::Modulo
    );
    if !arithmetic {
        return Ok(());
    }
    let (Some(left), Some(right)) = (
        type_of(&binary.left, schema),
        type_of(&binary.right, schema),
    ) else {
        return Ok(());
    };
    // Decimals are computed on their native integers, and fail when those
    // overflow: refuse what the operands' precisions could overflow.
    if let (Some((p1, s1, max)), Some((p2, s2, _))) =
        (decimal_digits(&left), decimal_digits(&right))
    {
        let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
        let needed = match binary.op {
            Operator::Plus | Operator::Minus => (p1 - s1).max(p2 - s2) + s1.max(s2) + 1,
            Operator::Multiply => p1 + p2,
            Operator::Divide => p1 + s2 + 5,
            _ => p1.max(p2) + s1.max(s2),
        };
        if needed > i32::from(max) {
            return Err(side_channel(
                format!("this decimal arithmetic needs {needed} digits and can overflow"),
                "cast the operands to DOUBLE, or to decimals of fewer digits",
                expr,
            ));
        }
    }
    let is_span = |t: &DataType| matches!(t, DataType::Interval(_) | DataType::Duration(_));
    if matches!(
        (&left, &right),
        (DataType::Timestamp(..), DataType::Timestamp(..))
    ) && binary.op == Operator::Minus
    {
        return Err(side_channel(
            "the difference of two timestamps can overflow",
            "subtract their epochs, date_part('epoch', a) - date_part('epoch', b), or cast them to dates",
            expr,
        ));
    }
    for (side, data_type) in [(&binary.left, &left), (&binary.right, &right)] {
        if !is_span(data_type) {
            continue;
        }
        let Some(value) = constant_value(side) else {
            return Err(interval_refusal(expr));
        };
        let moment = [&left, &right].into_iter().find(|t| guards::is_moment(t));
        let Some(moment) = moment else {
            continue;
        };
        let days = interval_days(&value).filter(|d| *d <= MAX_INTERVAL_DAYS);
        let Some(days) = days else {
            return Err(side_channel(
                "a date can be moved by at most ten thousand years",
                "use a shorter interval",
                expr,
            ));
        };
        if guards::safe_range(moment, days).is_none() {
            return Err(side_channel(
                format!(
                    "moving a {moment} by this interval can take it out of the range of its type"
                ),
                "use a shorter interval, or cast to a date first",
                expr,
            ));
        }
    }
    Ok(())
}
