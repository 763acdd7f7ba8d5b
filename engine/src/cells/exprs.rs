//! Expressions the cells plans build alike.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::functions::core::expr_fn::nullif;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{AggregateUDF, BinaryExpr, Cast, Expr, Operator, lit};

use super::measures::Value;

pub(super) fn binary(left: Expr, op: Operator, right: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)))
}

pub(super) fn cast(expr: Expr, data_type: DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(expr), data_type))
}

/// The same call (filter included) with another aggregate function.
pub(super) fn with_function(
    value: &Value,
    udaf: Arc<AggregateUDF>,
    arguments: Vec<Expr>,
    distinct: bool,
) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        udaf,
        arguments,
        distinct,
        value.filter.clone().map(Box::new),
        Vec::new(),
        None,
    ))
}

/// An average as the cells plans release it: a sum over a count, in
/// `Float64`, NULL without values.
pub(super) fn average(sum: Expr, count: Expr) -> Expr {
    binary(
        cast(sum, DataType::Float64),
        Operator::Divide,
        nullif(cast(count, DataType::Float64), lit(0.0)),
    )
}
