//! Guards: each construct that can fail on some data values is rewritten so
//! that those values give NULL instead, whatever row they are on. A `CASE`
//! evaluates its branches only on the rows that reach them, so a guard
//! written as `CASE WHEN <the value is safe> THEN <the construct> END` never
//! runs the construct on an unsafe value; and since the guard depends on the
//! value only, whether a query fails no longer depends on which persons
//! exist.
//!
//! What each guard covers (from DataFusion 55's kernels):
//!
//! - casts become `TRY_CAST`;
//! - integer division and remainder: by zero, and `MIN / -1`;
//! - float and decimal division and remainder: by zero;
//! - `abs` of an integer's minimum; `sqrt` of a negative number;
//! - `substr` from `i64::MIN`;
//! - `date_trunc` of timestamps outside 1678 to 2261, where it overflows
//!   nanoseconds;
//! - a date or timestamp plus or minus a constant interval, outside the
//!   range where the result exists;
//! - functions that grow their output (`concat`, `concat_ws`, `||`,
//!   `replace`): NULL beyond [`MAX_VALUE_BYTES`].

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::functions::expr_fn::octet_length;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator, lit, when};

use super::allowlist::MAX_VALUE_BYTES;
use super::constants::{constant_value, interval_days};

/// `CASE WHEN safe THEN expr END`.
fn guarded(safe: Expr, expr: Expr) -> Option<Expr> {
    when(safe, expr).end().ok()
}

fn type_of(expr: &Expr, schema: &DFSchema) -> Option<DataType> {
    expr.get_type(schema).ok()
}

fn signed_minimum(data_type: &DataType) -> Option<ScalarValue> {
    Some(match data_type {
        DataType::Int8 => ScalarValue::Int8(Some(i8::MIN)),
        DataType::Int16 => ScalarValue::Int16(Some(i16::MIN)),
        DataType::Int32 => ScalarValue::Int32(Some(i32::MIN)),
        DataType::Int64 => ScalarValue::Int64(Some(i64::MIN)),
        _ => return None,
    })
}

/// Rewrites one node (its children are rewritten already).
pub fn guard(expr: Expr, schema: &DFSchema) -> Transformed<Expr> {
    match expr {
        Expr::Cast(Cast { expr, field }) => {
            Transformed::yes(Expr::TryCast(TryCast { expr, field }))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => binary(*left, op, *right, schema),
        Expr::ScalarFunction(function) => scalar_function(function, schema),
        other => Transformed::no(other),
    }
}

fn binary(left: Expr, op: Operator, right: Expr, schema: &DFSchema) -> Transformed<Expr> {
    let rebuild = |left: Expr, right: Expr| {
        Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)))
    };
    match op {
        Operator::Divide | Operator::Modulo => {
            let right_type = type_of(&right, schema);
            let zero = right_type
                .as_ref()
                .and_then(|t| ScalarValue::new_zero(t).ok())
                .unwrap_or(ScalarValue::Int64(Some(0)));
            let divisor = datafusion::functions::core::expr_fn::nullif(right.clone(), lit(zero));
            let divided = rebuild(left.clone(), divisor);
            // MIN / -1 overflows; -1 divides as a negation, which wraps.
            let expr = match right_type.as_ref().and_then(signed_minimum) {
                Some(_) if op == Operator::Divide => {
                    let minus_one = right_type
                        .as_ref()
                        .and_then(|t| ScalarValue::new_negative_one(t).ok());
                    match minus_one.and_then(|m| {
                        when(right.eq(lit(m)), Expr::Negative(Box::new(left)))
                            .otherwise(divided.clone())
                            .ok()
                    }) {
                        Some(expr) => expr,
                        None => divided,
                    }
                }
                _ => divided,
            };
            Transformed::yes(expr)
        }
        Operator::StringConcat => {
            let bound = bytes(&left) + bytes(&right);
            let expr = rebuild(left, right);
            match guarded(bound.lt_eq(lit(MAX_VALUE_BYTES)), expr.clone()) {
                Some(g) => Transformed::yes(g),
                None => Transformed::no(expr),
            }
        }
        Operator::Plus | Operator::Minus => {
            let expr = rebuild(left.clone(), right.clone());
            match temporal_operand_guard(&left, &right, schema) {
                Some(safe) => match guarded(safe, expr.clone()) {
                    Some(g) => Transformed::yes(g),
                    None => Transformed::no(expr),
                },
                None => Transformed::no(expr),
            }
        }
        _ => Transformed::no(rebuild(left, right)),
    }
}

/// The byte length of a text value, 0 for NULL.
fn bytes(expr: &Expr) -> Expr {
    datafusion::functions::core::expr_fn::coalesce(vec![
        Expr::TryCast(TryCast::new(
            Box::new(octet_length(expr.clone())),
            DataType::Int64,
        )),
        lit(0i64),
    ])
}

/// For a date or timestamp plus or minus a constant interval: the range of
/// the date or timestamp in which the result exists.
fn temporal_operand_guard(left: &Expr, right: &Expr, schema: &DFSchema) -> Option<Expr> {
    let (moment, interval) = match (type_of(left, schema)?, type_of(right, schema)?) {
        (l, DataType::Interval(_)) if is_moment(&l) => (left, right),
        (DataType::Interval(_), r) if is_moment(&r) => (right, left),
        _ => return None,
    };
    // The interval is a constant of bounded size (checked before).
    let days = constant_value(interval).and_then(|v| interval_days(&v))?;
    let data_type = type_of(moment, schema)?;
    let (low, high) = safe_range(&data_type, days)?;
    Some(moment.clone().between(lit(low), lit(high)))
}

/// Dates and timestamps: the types that intervals move.
pub fn is_moment(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
    )
}

/// Seconds from 1970 of 1678-01-01 and 2262-01-01: nanosecond timestamps
/// cannot leave that range.
const NANOSECOND_SECONDS: (i64, i64) = (-9_214_560_000, 9_214_646_400);
/// About 253,000 years each side of 1970, within chrono's dates.
const CHRONO_SECONDS: (i64, i64) = (-8_000_000_000_000, 8_000_000_000_000);
/// The same in days, for dates.
const CHRONO_DAYS: (i64, i64) = (-92_000_000, 92_000_000);

/// The values of `data_type` that stay representable `margin_days` away.
pub fn safe_range(data_type: &DataType, margin_days: i64) -> Option<(ScalarValue, ScalarValue)> {
    let margin_seconds = margin_days.checked_mul(86_400)?;
    let shrink = |(low, high): (i64, i64), margin: i64| -> Option<(i64, i64)> {
        let (low, high) = (low.checked_add(margin)?, high.checked_sub(margin)?);
        (low < high).then_some((low, high))
    };
    Some(match data_type {
        DataType::Date32 => {
            let (low, high) = shrink(CHRONO_DAYS, margin_days)?;
            (
                ScalarValue::Date32(Some(i32::try_from(low).ok()?)),
                ScalarValue::Date32(Some(i32::try_from(high).ok()?)),
            )
        }
        DataType::Date64 => {
            let (low, high) = shrink(CHRONO_DAYS, margin_days)?;
            (
                ScalarValue::Date64(Some(low * 86_400_000)),
                ScalarValue::Date64(Some(high * 86_400_000)),
            )
        }
        DataType::Timestamp(unit, zone) => {
            let (bounds, scale) = match unit {
                TimeUnit::Nanosecond => (NANOSECOND_SECONDS, 1_000_000_000),
                TimeUnit::Microsecond => (CHRONO_SECONDS, 1_000_000),
                TimeUnit::Millisecond => (CHRONO_SECONDS, 1_000),
                TimeUnit::Second => (CHRONO_SECONDS, 1),
            };
            let (low, high) = shrink(bounds, margin_seconds)?;
            let (low, high) = (low.checked_mul(scale)?, high.checked_mul(scale)?);
            let make = |v: i64| match unit {
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(v), zone.clone()),
                TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(v), zone.clone()),
                TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(v), zone.clone()),
                TimeUnit::Second => ScalarValue::TimestampSecond(Some(v), zone.clone()),
            };
            (make(low), make(high))
        }
        _ => return None,
    })
}

fn scalar_function(function: ScalarFunction, schema: &DFSchema) -> Transformed<Expr> {
    let name = function.name().to_string();
    let args = function.args.clone();
    let expr = Expr::ScalarFunction(function);
    let safe = match name.as_str() {
        "abs" => args.first().and_then(|x| {
            let minimum = signed_minimum(&type_of(x, schema)?)?;
            Some(x.clone().not_eq(lit(minimum)))
        }),
        "sqrt" => args.first().map(|x| {
            let zero = type_of(x, schema)
                .and_then(|t| ScalarValue::new_zero(&t).ok())
                .unwrap_or(ScalarValue::Float64(Some(0.0)));
            x.clone().gt_eq(lit(zero))
        }),
        "substr" | "substring" => args.get(1).and_then(|start| {
            (type_of(start, schema)? == DataType::Int64)
                .then(|| start.clone().not_eq(lit(i64::MIN)))
        }),
        "date_trunc" | "datetrunc" => args.get(1).and_then(|moment| {
            let data_type = type_of(moment, schema)?;
            let DataType::Timestamp(..) = data_type else {
                return None;
            };
            let (low, high) = safe_range(&data_type, 0)?;
            Some(moment.clone().between(lit(low), lit(high)))
        }),
        "concat" => Some(
            args.iter()
                .map(bytes)
                .reduce(|a, b| a + b)
                .unwrap_or_else(|| lit(0i64))
                .lt_eq(lit(MAX_VALUE_BYTES)),
        ),
        "concat_ws" => args.split_first().map(|(separator, values)| {
            let separators = bytes(separator) * lit(values.len() as i64);
            values
                .iter()
                .map(bytes)
                .fold(separators, |a, b| a + b)
                .lt_eq(lit(MAX_VALUE_BYTES))
        }),
        "replace" => match (
            args.first(),
            args.get(1).and_then(constant_value),
            args.get(2).and_then(constant_value),
        ) {
            (Some(text), Some(from), Some(to)) => {
                let length = |v: &ScalarValue| match v {
                    ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => s.len(),
                    _ => 0,
                };
                // Each occurrence of `from` becomes `to`: the text grows at
                // most by their ratio.
                let growth = length(&to).div_ceil(length(&from).max(1)).max(1) as i64;
                Some((bytes(text) * lit(growth)).lt_eq(lit(MAX_VALUE_BYTES)))
            }
            _ => None,
        },
        _ => None,
    };
    match safe.and_then(|safe| guarded(safe, expr.clone())) {
        Some(g) => Transformed::yes(g),
        None => Transformed::no(expr),
    }
}
