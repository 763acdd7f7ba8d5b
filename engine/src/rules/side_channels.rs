//! Rule 5, no side channels.
//!
//! > Whether a query errors, how long it takes to plan, and what an error says
//! > must not depend on one person's data. Refuse or neutralise constructs that
//! > turn data into errors (division by zero, failing casts,
//! > `CASE ... THEN 1/0`), and never put data values in error messages.
//!
//! Every function a query uses must be on an allowlist of functions that
//! cannot fail on data, or whose failing arguments must be literals (a
//! literal's failure does not depend on data). Constructs that can fail on
//! data are neutralised: a division or remainder by zero gives NULL, and casts
//! become `TRY_CAST` (NULL instead of an error). Planning never reads data, so
//! acceptance, refusal and their messages depend on the query and the policy
//! only.

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, lit};
use datafusion::scalar::ScalarValue;

use crate::error::{Refusal, Rule};
use crate::rewrite::place_of;

/// Scalar functions a query may use. Each cannot fail on data, or fails only
/// on arguments that [`LITERAL_ARGUMENTS`] requires to be literals.
const SCALAR_FUNCTIONS: &[&str] = &[
    // numbers
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "signum",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log2",
    "log10",
    "pi",
    "greatest",
    "least",
    "isnan",
    "iszero",
    "nanvl",
    // null handling and conditionals
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "ifnull",
    // text
    "lower",
    "upper",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "concat",
    "concat_ws",
    "left",
    "right",
    "substr",
    "substring",
    "lpad",
    "rpad",
    "replace",
    "starts_with",
    "ends_with",
    "strpos",
    "instr",
    "position",
    "split_part",
    "initcap",
    "reverse",
    "translate",
    "contains",
    // dates
    "date_part",
    "datepart",
    "date_trunc",
    "datetrunc",
    "extract",
    "current_date",
    "now",
    "current_time",
    "today",
];

/// Arguments (zero-based positions) that must be literals, because the
/// function fails on some of their values: a string slice's length, a
/// padding width, a field position, a date part's name.
const LITERAL_ARGUMENTS: &[(&str, &[usize])] = &[
    ("substr", &[2]),
    ("substring", &[2]),
    ("lpad", &[1, 2]),
    ("rpad", &[1, 2]),
    ("split_part", &[1, 2]),
    ("date_part", &[0]),
    ("datepart", &[0]),
    ("date_trunc", &[0]),
    ("datetrunc", &[0]),
    ("extract", &[0]),
    ("round", &[1]),
    ("trunc", &[1]),
    ("log", &[0]),
];

/// Aggregate functions a query may use. Order statistics are checked again
/// by the magnitude rule when their argument is sensitive.
const AGGREGATE_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "median",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "var",
    "var_samp",
    "var_pop",
    "bool_and",
    "bool_or",
    "grouping",
];

/// Window functions a query may use (over private rows they must be
/// partitioned by the person, which the lineage rule checks).
const WINDOW_FUNCTIONS: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

fn refuse_function(kind: &str, name: &str, expr: &Expr) -> Refusal {
    Refusal::new(
        Rule::SideChannels,
        format!("{kind} function {name} is not on the allowlist"),
        "use arithmetic, CASE, COALESCE, string and date functions such as substr, lower, date_part or date_trunc; `seuil policy explain` lists what is allowed",
    )
    .at(place_of(expr))
}

fn is_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(..) => true,
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => is_literal(expr),
        Expr::Negative(inner) => is_literal(inner),
        _ => false,
    }
}

/// Checks one expression against the allowlists and rewrites what could fail
/// on data into what gives NULL instead. For predicates, join keys and sort
/// keys, whose names nothing refers to.
pub fn neutralise(expr: Expr) -> Result<Expr, Refusal> {
    check_allowed(&expr)?;
    expr.transform_up(|e| Ok(neutralise_one(e)))
        .map(|t| t.data)
        .map_err(|_| {
            Refusal::new(
                Rule::SideChannels,
                "the expression could not be made safe",
                "simplify the expression",
            )
        })
}

/// Like [`neutralise`], for expressions that name an output column
/// (projections, aggregates, window functions, group keys): the result keeps
/// the original name, so that the plan above still finds the column.
pub fn neutralise_named(expr: Expr) -> Result<Expr, Refusal> {
    let original_name = expr.schema_name().to_string();
    let rewritten = neutralise(expr)?;
    if rewritten.schema_name().to_string() == original_name {
        Ok(rewritten)
    } else {
        Ok(rewritten.alias(original_name))
    }
}

fn neutralise_one(expr: Expr) -> Transformed<Expr> {
    match expr {
        Expr::Cast(Cast { expr, field }) => {
            Transformed::yes(Expr::TryCast(TryCast { expr, field }))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Divide | Operator::Modulo) =>
        {
            let guarded = datafusion::functions::core::expr_fn::nullif(
                *right,
                lit(ScalarValue::Int64(Some(0))),
            );
            Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                left,
                op,
                right: Box::new(guarded),
            }))
        }
        other => Transformed::no(other),
    }
}

/// Refuses functions and constructs outside the allowlists.
pub fn check_allowed(expr: &Expr) -> Result<(), Refusal> {
    let mut refusal = None;
    let _ = expr.apply(|e| {
        let outcome = check_one(e);
        match outcome {
            Ok(()) => Ok(TreeNodeRecursion::Continue),
            Err(r) => {
                refusal = Some(r);
                Ok(TreeNodeRecursion::Stop)
            }
        }
    });
    refusal.map_or(Ok(()), Err)
}

fn check_one(expr: &Expr) -> Result<(), Refusal> {
    match expr {
        Expr::ScalarFunction(function) => {
            let name = function.name();
            if !SCALAR_FUNCTIONS.contains(&name) {
                return Err(refuse_function("scalar", name, expr));
            }
            if let Some((_, positions)) = LITERAL_ARGUMENTS.iter().find(|(f, _)| *f == name) {
                for &position in *positions {
                    if let Some(argument) = function.args.get(position)
                        && !is_literal(argument)
                    {
                        return Err(Refusal::new(
                            Rule::SideChannels,
                            format!(
                                "argument {} of {name} must be a literal, because some of its values make {name} fail",
                                position + 1
                            ),
                            "write that argument as a constant",
                        )
                        .at(place_of(expr)));
                    }
                }
            }
            Ok(())
        }
        Expr::AggregateFunction(function) => {
            let name = function.func.name();
            if AGGREGATE_FUNCTIONS.contains(&name) {
                Ok(())
            } else {
                Err(refuse_function("aggregate", name, expr))
            }
        }
        Expr::WindowFunction(window) => {
            let name = window.fun.name();
            if WINDOW_FUNCTIONS.contains(&name) || AGGREGATE_FUNCTIONS.contains(&name) {
                Ok(())
            } else {
                Err(refuse_function("window", name, expr))
            }
        }
        Expr::Like(like) | Expr::SimilarTo(like) => {
            if is_literal(&like.pattern) {
                Ok(())
            } else {
                Err(Refusal::new(
                    Rule::SideChannels,
                    "the pattern of LIKE must be a literal: a pattern taken from data can fail on it",
                    "compare with a constant pattern such as LIKE 'I2%'",
                )
                .at(place_of(expr)))
            }
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
