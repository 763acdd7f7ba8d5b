//! Rule 6, magnitudes are protected too.
//!
//! > `SUM` and `AVG` of sensitive measures apply the dominance rule (policy
//! > `dominance = { n = 2, k = 85 }`: suppress a cell when its n largest
//! > persons hold more than k% of its total) and clamp each person's
//! > contribution to the column's `bounds`. `MIN` and `MAX` of a sensitive
//! > column are refused unless the policy allows them (they release one
//! > person's value).
//!
//! This module builds the *cells plan* of a released aggregate: the
//! aggregate itself, with one more column counting distinct persons per cell
//! and, when the aggregate reads a sensitive column, the per-person
//! contributions the dominance rules need. The release step
//! ([`crate::release`]) reads those extra columns.
//!
//! Without sensitive measures the cells plan is the user's aggregate plus
//! its persons counted up to the threshold ([`super::distinct_persons`]).
//! With them it has two or three levels, all in
//! one plan and one pass over the data:
//!
//! 1. per person and finest cell: the user's aggregates as partial results,
//!    each person's sum of a sensitive column clamped to its bounds;
//! 2. for `ROLLUP`, `CUBE` and `GROUPING SETS` only: per person and released
//!    cell, the sum of the person's clamped contributions over the finest
//!    cells it covers (so that a total is exactly the sum of its cells);
//! 3. per cell: the released values, the person count, and for each
//!    sensitive sum its total and its largest per-person contributions
//!    (found by [`super::largest`] in this same aggregate, without sorting
//!    the persons of each cell). Floating-point sums over persons are exact
//!    ([`super::exact_sum`]), so that they do not depend on the order in
//!    which persons arrive.
//!
//! Order statistics (`MIN`, `MAX`, `MEDIAN`) of a sensitive column, when the
//! role allows them, are taken over persons' values with the `exclude`
//! largest (or smallest) persons left out, so no single person's value is
//! released.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchemaRef};
use datafusion::functions_aggregate::expr_fn::{bool_and, bool_or, count, max, median, min, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::logical_expr::expr::{AggregateFunction, GroupingSet, Sort};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, LogicalPlan, Operator, Projection, col, lit, when,
};
use seuil_policies::Role;

use crate::error::{EngineError, Refusal, Rule};
use crate::rewrite::lineage::{PersonLineage, bare_column, expr_sensitivity, output_column};
use crate::rewrite::place_of;
use crate::rules::distinct_persons::persons_up_to;
use crate::rules::exact_sum::exact_sum;
use crate::rules::largest::nth_largest;

/// Name of the per-cell distinct-person count in the cells plan.
pub const PERSONS_COLUMN: &str = "__seuil_persons";

/// How a released value combines across cells, for rounding and margins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeasureKind {
    /// A count of rows or values: additive, rounded.
    Count,
    /// A sum of a column that is not sensitive: additive, rounded.
    Sum,
    /// A clamped sum of a sensitive column: additive, rounded, dominance.
    SensitiveSum,
    /// Anything else (averages, order statistics, distinct counts).
    Other,
}

impl MeasureKind {
    /// True when a total is the sum of its cells for this measure.
    pub fn is_additive(self) -> bool {
        matches!(
            self,
            MeasureKind::Count | MeasureKind::Sum | MeasureKind::SensitiveSum
        )
    }
}

/// Where the dominance rules find one sensitive measure's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DominanceColumns {
    /// The measure's position among the aggregate's values.
    pub measure: usize,
    /// Column of the cell's total of per-person contributions.
    pub total: usize,
    /// Columns of the largest, second largest, ... contributions.
    pub largest: Vec<usize>,
}

/// The layout of a cells plan's output.
#[derive(Debug, Clone)]
pub struct CellsLayout {
    /// Columns that are the aggregate's own output, in its order.
    pub output_columns: usize,
    /// Among them, the leading group columns (with `__grouping_id` for
    /// grouping sets).
    pub group_columns: usize,
    /// For grouping sets: the number of distinct group expressions and the
    /// position of `__grouping_id`.
    pub grouping: Option<(usize, usize)>,
    /// Kind of each aggregate value, in order.
    pub measures: Vec<MeasureKind>,
    /// Column of the distinct-person count.
    pub persons: usize,
    /// The dominance inputs of each sensitive measure.
    pub dominance: Vec<DominanceColumns>,
}

fn df(e: datafusion::error::DataFusionError) -> EngineError {
    EngineError::Execution(format!("internal planning error: {e}"))
}

fn strip_alias(expr: &Expr) -> (&Expr, Option<&str>) {
    match expr {
        Expr::Alias(alias) => (alias.expr.as_ref(), Some(alias.name.as_str())),
        other => (other, None),
    }
}

/// One of the user's aggregates, classified.
enum Classified<'a> {
    /// Not reading a sensitive column.
    Plain(&'a AggregateFunction),
    /// `SUM` or `AVG` of a bounded sensitive column.
    SensitiveSumOrAvg {
        function: &'a AggregateFunction,
        bounds: (f64, f64),
        average: bool,
    },
    /// `MIN`, `MAX` or `MEDIAN` of a sensitive column, allowed for the role.
    OrderStatistic { name: &'static str },
}

fn magnitude_refusal(message: String, hint: &str, expr: &Expr) -> EngineError {
    EngineError::Refused(Refusal::new(Rule::Magnitudes, message, hint).at(place_of(expr)))
}

fn classify<'a>(
    expr: &'a Expr,
    lineage: &PersonLineage,
    role: &Role,
) -> Result<Classified<'a>, EngineError> {
    let (inner, _) = strip_alias(expr);
    let Expr::AggregateFunction(function) = inner else {
        return Err(EngineError::Execution(
            "internal planning error: an aggregate that is not a function".into(),
        ));
    };
    let name = function.func.name();
    let sensitivity = function
        .params
        .args
        .iter()
        .find_map(|a| expr_sensitivity(a, lineage));
    let Some(bounds) = sensitivity else {
        return Ok(Classified::Plain(function));
    };
    if name == "count" {
        return Ok(Classified::Plain(function));
    }
    let argument = function
        .params
        .args
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match name {
        "sum" | "avg" | "mean" => {
            if function.params.distinct {
                return Err(magnitude_refusal(
                    format!(
                        "{name}(DISTINCT {argument}) of a sensitive column cannot be protected"
                    ),
                    "drop DISTINCT: each person's rows are summed, then clamped",
                    inner,
                ));
            }
            let Some(bounds) = bounds else {
                return Err(magnitude_refusal(
                    format!(
                        "{name}({argument}) sums an expression of a sensitive column, whose contributions have no bounds to clamp to"
                    ),
                    "sum the sensitive column itself, and select rows with WHERE instead of CASE",
                    inner,
                ));
            };
            Ok(Classified::SensitiveSumOrAvg {
                function,
                bounds,
                average: name != "sum",
            })
        }
        "min" | "max" | "median" => {
            if !role.order_statistics.allowed {
                return Err(magnitude_refusal(
                    format!(
                        "{}({argument}) of a sensitive column would release one person's value",
                        name.to_uppercase()
                    ),
                    "use SUM or AVG, or ask for a role whose policy allows order statistics",
                    inner,
                ));
            }
            let name = match name {
                "min" => "min",
                "max" => "max",
                _ => "median",
            };
            Ok(Classified::OrderStatistic { name })
        }
        _ => Err(magnitude_refusal(
            format!("{name}({argument}) of a sensitive column cannot be protected"),
            "SUM, AVG, and (when the role allows them) MIN, MAX and MEDIAN are released for sensitive columns",
            inner,
        )),
    }
}

/// The kind of a plain (non-sensitive) aggregate in a single-level plan.
fn plain_kind(function: &AggregateFunction) -> MeasureKind {
    match function.func.name() {
        "count" if !function.params.distinct => MeasureKind::Count,
        "sum" if !function.params.distinct => MeasureKind::Sum,
        _ => MeasureKind::Other,
    }
}

/// Builds the cells plan of a released aggregate over `input`.
pub fn cells_plan(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    aggr_expr: Vec<Expr>,
    original_schema: &DFSchemaRef,
    lineage: &PersonLineage,
    role: &Role,
) -> Result<(LogicalPlan, CellsLayout), EngineError> {
    let classified = aggr_expr
        .iter()
        .map(|e| classify(e, lineage, role))
        .collect::<Result<Vec<_>, _>>()?;
    let has_magnitudes = classified
        .iter()
        .any(|c| !matches!(c, Classified::Plain(_)));
    if has_magnitudes {
        return multi_level(
            input,
            group_expr,
            &aggr_expr,
            &classified,
            original_schema,
            lineage,
            role,
        );
    }

    let measures = classified
        .iter()
        .map(|c| match c {
            Classified::Plain(function) => plain_kind(function),
            _ => MeasureKind::Other,
        })
        .collect();
    let persons =
        persons_up_to(col(lineage.person.clone()), role.min_persons).alias(PERSONS_COLUMN);
    let mut cells_aggr = aggr_expr;
    cells_aggr.push(persons);
    let cells = Aggregate::try_new(Arc::new(input), group_expr, cells_aggr).map_err(df)?;
    let group_columns = cells.group_expr_len().map_err(df)?;
    let grouping = grouping_info(&cells.group_expr, group_columns);
    let output_columns = cells.schema.fields().len() - 1;
    Ok((
        LogicalPlan::Aggregate(cells),
        CellsLayout {
            output_columns,
            group_columns,
            grouping,
            measures,
            persons: output_columns,
            dominance: Vec::new(),
        },
    ))
}

fn grouping_info(group_expr: &[Expr], group_columns: usize) -> Option<(usize, usize)> {
    matches!(group_expr, [Expr::GroupingSet(_)]).then(|| (group_columns - 1, group_columns - 1))
}

/// The explicit sets of a grouping set, in DataFusion's order.
fn expand_sets(set: &GroupingSet) -> Vec<Vec<Expr>> {
    match set {
        GroupingSet::Rollup(exprs) => (0..=exprs.len())
            .rev()
            .map(|n| exprs[..n].to_vec())
            .collect(),
        GroupingSet::Cube(exprs) => {
            let n = exprs.len();
            (0..(1usize << n))
                .map(|mask| {
                    exprs
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << (n - 1 - i)) == 0)
                        .map(|(_, e)| e.clone())
                        .collect()
                })
                .collect()
        }
        GroupingSet::GroupingSets(sets) => sets.clone(),
    }
}

/// What a level-1 partial aggregate is, and how later levels combine it.
#[derive(Clone, Copy)]
enum Combine {
    Sum,
    Min,
    Max,
    Median,
    BoolAnd,
    BoolOr,
}

fn combine(expr: Expr, how: Combine) -> Expr {
    match how {
        Combine::Sum => sum(expr),
        Combine::Min => min(expr),
        Combine::Max => max(expr),
        Combine::Median => median(expr),
        Combine::BoolAnd => bool_and(expr),
        Combine::BoolOr => bool_or(expr),
    }
}

/// A partial column of level 1 and how to combine it.
struct Partial {
    expr: Expr,
    how: Combine,
    clamp: Option<(f64, f64)>,
}

/// How one user aggregate is computed from its partials at the last level.
enum Final {
    /// Combine partial `i`.
    Combined(usize, Combine),
    /// Sum of partial `i` divided by the sum of partial `j`.
    Ratio(usize, usize),
    /// The `rank`-th largest (or smallest) of partial `i` over persons.
    Trimmed {
        partial: usize,
        rank: i64,
        descending: bool,
    },
    /// The median of partial `i` over persons (removing as many persons at
    /// each end leaves the median where it is).
    Median(usize),
}

fn refuse_mixed(function: &AggregateFunction, expr: &Expr) -> EngineError {
    magnitude_refusal(
        format!(
            "{} cannot be computed together with sums or order statistics of sensitive columns",
            function.func.name()
        ),
        "run it in a separate query",
        expr,
    )
}

#[allow(clippy::too_many_arguments)]
fn multi_level(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    aggr_expr: &[Expr],
    classified: &[Classified<'_>],
    original_schema: &DFSchemaRef,
    lineage: &PersonLineage,
    role: &Role,
) -> Result<(LogicalPlan, CellsLayout), EngineError> {
    let grouping_set = match group_expr.as_slice() {
        [Expr::GroupingSet(set)] => Some(set.clone()),
        _ => None,
    };
    let distinct_groups: Vec<Expr> = match &grouping_set {
        Some(set) => set.distinct_expr().into_iter().cloned().collect(),
        None => group_expr.clone(),
    };
    let person_keys: HashSet<&Column> = lineage
        .keys
        .iter()
        .filter(|k| k.len() == 1)
        .map(|k| &k[0])
        .collect();

    // Level 1: per person and finest cell.
    let mut partials: Vec<Partial> = Vec::new();
    let mut finals: Vec<Final> = Vec::new();
    let mut measures = Vec::new();
    let mut dominance_partials: Vec<(usize, usize)> = Vec::new(); // (measure, partial)
    let add = |partials: &mut Vec<Partial>, expr: Expr, how: Combine, clamp| {
        partials.push(Partial { expr, how, clamp });
        partials.len() - 1
    };
    for (i, (expr, class)) in aggr_expr.iter().zip(classified).enumerate() {
        let (inner, _) = strip_alias(expr);
        match class {
            Classified::Plain(function) => {
                let name = function.func.name();
                let distinct = function.params.distinct;
                let (kind, final_) = match name {
                    "count" if !distinct => (MeasureKind::Count, {
                        let p = add(&mut partials, inner.clone(), Combine::Sum, None);
                        Final::Combined(p, Combine::Sum)
                    }),
                    "count"
                        if function.params.args.len() == 1
                            && bare_column(&function.params.args[0])
                                .is_some_and(|c| person_keys.contains(c)) =>
                    {
                        // Distinct values of a person key never span two
                        // persons, so per-person distinct counts add up.
                        let p = add(&mut partials, inner.clone(), Combine::Sum, None);
                        (MeasureKind::Other, Final::Combined(p, Combine::Sum))
                    }
                    "sum" if !distinct => {
                        let p = add(&mut partials, inner.clone(), Combine::Sum, None);
                        (MeasureKind::Sum, Final::Combined(p, Combine::Sum))
                    }
                    "min" if !distinct => {
                        let p = add(&mut partials, inner.clone(), Combine::Min, None);
                        (MeasureKind::Other, Final::Combined(p, Combine::Min))
                    }
                    "max" if !distinct => {
                        let p = add(&mut partials, inner.clone(), Combine::Max, None);
                        (MeasureKind::Other, Final::Combined(p, Combine::Max))
                    }
                    "bool_and" => {
                        let p = add(&mut partials, inner.clone(), Combine::BoolAnd, None);
                        (MeasureKind::Other, Final::Combined(p, Combine::BoolAnd))
                    }
                    "bool_or" => {
                        let p = add(&mut partials, inner.clone(), Combine::BoolOr, None);
                        (MeasureKind::Other, Final::Combined(p, Combine::BoolOr))
                    }
                    "avg" | "mean" if !distinct => {
                        let s = add(
                            &mut partials,
                            with_function(function, "sum")?,
                            Combine::Sum,
                            None,
                        );
                        let c = add(
                            &mut partials,
                            with_function(function, "count")?,
                            Combine::Sum,
                            None,
                        );
                        (MeasureKind::Other, Final::Ratio(s, c))
                    }
                    _ => return Err(refuse_mixed(function, inner)),
                };
                measures.push(kind);
                finals.push(final_);
            }
            Classified::SensitiveSumOrAvg {
                function,
                bounds,
                average,
            } => {
                let s = add(
                    &mut partials,
                    with_function(function, "sum")?,
                    Combine::Sum,
                    Some(*bounds),
                );
                dominance_partials.push((i, s));
                if *average {
                    let c = add(
                        &mut partials,
                        with_function(function, "count")?,
                        Combine::Sum,
                        None,
                    );
                    measures.push(MeasureKind::Other);
                    finals.push(Final::Ratio(s, c));
                } else {
                    measures.push(MeasureKind::SensitiveSum);
                    finals.push(Final::Combined(s, Combine::Sum));
                }
            }
            Classified::OrderStatistic { name, .. } => {
                // Each person's own statistic first; then, over persons, the
                // statistic with the most extreme persons left out.
                let rank = i64::from(role.order_statistics.exclude) + 1;
                let final_ = match *name {
                    "min" => {
                        let p = add(&mut partials, inner.clone(), Combine::Min, None);
                        Final::Trimmed {
                            partial: p,
                            rank,
                            descending: false,
                        }
                    }
                    "max" => {
                        let p = add(&mut partials, inner.clone(), Combine::Max, None);
                        Final::Trimmed {
                            partial: p,
                            rank,
                            descending: true,
                        }
                    }
                    _ => {
                        let p = add(&mut partials, inner.clone(), Combine::Median, None);
                        Final::Median(p)
                    }
                };
                measures.push(MeasureKind::Other);
                finals.push(final_);
            }
        }
    }

    let mut level1_groups = distinct_groups.clone();
    level1_groups.push(col(lineage.person.clone()));
    let level1_aggr: Vec<Expr> = partials
        .iter()
        .enumerate()
        .map(|(i, p)| p.expr.clone().alias(format!("__seuil_partial_{i}")))
        .collect();
    let level1 = Aggregate::try_new(Arc::new(input), level1_groups, level1_aggr).map_err(df)?;
    let level1_schema = Arc::clone(&level1.schema);
    let groups = distinct_groups.len();
    let group_columns: Vec<Column> = (0..groups)
        .map(|i| output_column(&level1_schema, i))
        .collect();
    let person = output_column(&level1_schema, groups);

    // Clamp each person's sums of sensitive columns to their bounds.
    let mut clamp_exprs: Vec<Expr> = (0..=groups)
        .map(|i| Expr::Column(output_column(&level1_schema, i)))
        .collect();
    for (i, partial) in partials.iter().enumerate() {
        let column = output_column(&level1_schema, groups + 1 + i);
        let expr = match partial.clamp {
            None => Expr::Column(column.clone()),
            Some((lower, upper)) => {
                let data_type = level1_schema.field(groups + 1 + i).data_type().clone();
                let value = Expr::Column(column.clone());
                let clamped = when(value.clone().lt(lit(lower)), lit(lower))
                    .when(value.clone().gt(lit(upper)), lit(upper))
                    .otherwise(value)
                    .map_err(df)?;
                Expr::TryCast(datafusion::logical_expr::TryCast::new(
                    Box::new(clamped),
                    data_type,
                ))
                .alias(column.name.clone())
            }
        };
        clamp_exprs.push(expr);
    }
    let clamped =
        Projection::try_new(clamp_exprs, Arc::new(LogicalPlan::Aggregate(level1))).map_err(df)?;
    let clamped_schema = Arc::clone(&clamped.schema);
    let partial_columns: Vec<Column> = (0..partials.len())
        .map(|i| output_column(&clamped_schema, groups + 1 + i))
        .collect();
    let mut per_person = LogicalPlan::Projection(clamped);
    let mut per_person_partials = partial_columns.clone();
    let mut per_person_person = person.clone();
    let mut cell_groups: Vec<Expr> = group_columns.iter().cloned().map(Expr::Column).collect();
    let mut level2_gid: Option<Expr> = None;

    // Level 2, grouping sets only: per person and released cell.
    if let Some(set) = &grouping_set {
        let sets: Vec<Vec<Expr>> = expand_sets(set)
            .into_iter()
            .map(|exprs| {
                let mut with_person = vec![Expr::Column(person.clone())];
                with_person.extend(exprs.iter().map(|e| {
                    let position = distinct_groups.iter().position(|d| d == e).unwrap_or(0);
                    Expr::Column(group_columns[position].clone())
                }));
                with_person
            })
            .collect();
        let level2_aggr: Vec<Expr> = partials
            .iter()
            .zip(&partial_columns)
            .enumerate()
            .map(|(i, (p, c))| {
                combine(Expr::Column(c.clone()), p.how).alias(format!("__seuil_partial_{i}"))
            })
            .collect();
        let level2 = Aggregate::try_new(
            Arc::new(per_person),
            vec![Expr::GroupingSet(GroupingSet::GroupingSets(sets))],
            level2_aggr,
        )
        .map_err(df)?;
        let schema = Arc::clone(&level2.schema);
        // Level 2's distinct expressions are the person, then the user's in
        // their order; its grouping id is the user's with the person's bit
        // (always 0) inserted above the user's bits.
        let level2_groups = groups + 1;
        per_person_person = output_column(&schema, 0);
        let level2_group_columns: Vec<Column> = (1..level2_groups)
            .map(|i| output_column(&schema, i))
            .collect();
        let gid = Expr::Column(output_column(&schema, level2_groups));
        level2_gid = Some(gid.clone());
        per_person_partials = (0..partials.len())
            .map(|i| output_column(&schema, level2_groups + 1 + i))
            .collect();
        let gid_type = original_schema.field(groups).data_type().clone();
        let mask = (1u64 << groups) - 1;
        let as_u64 = |e: Expr| {
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(e),
                DataType::UInt64,
            ))
        };
        let ordinal = binary(
            binary(
                as_u64(gid.clone()),
                Operator::BitwiseShiftRight,
                lit(groups as u64 + 1),
            ),
            Operator::BitwiseShiftLeft,
            lit(groups as u64),
        );
        let user_gid = binary(
            ordinal,
            Operator::BitwiseOr,
            binary(as_u64(gid), Operator::BitwiseAnd, lit(mask)),
        );
        cell_groups = level2_group_columns.into_iter().map(Expr::Column).collect();
        cell_groups.push(
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(user_gid),
                gid_type,
            ))
            .alias(Aggregate::INTERNAL_GROUPING_ID),
        );
        per_person = LogicalPlan::Aggregate(level2);
    }

    let cell_groups_for_ranks: Vec<Expr> = match &grouping_set {
        // Level 2's grouping id tells its sets apart: rows of different
        // sets never share a cell.
        Some(_) => cell_groups
            .iter()
            .take(groups)
            .cloned()
            .chain(std::iter::once(
                level2_gid.clone().unwrap_or_else(|| lit(0u64)),
            ))
            .collect(),
        None => cell_groups.clone(),
    };
    // Ranks of persons within each cell, for the trimmed order statistics.
    // (Windows rather than ordered aggregates: one aggregate cannot order by
    // several expressions. The largest contributions of the dominance rules
    // do not need them: see `super::largest`.)
    let largest = dominance_depth(role);
    let mut rank_exprs: Vec<Expr> = Vec::new();
    let mut ranked: Vec<(usize, bool, String)> = Vec::new(); // (partial, descending, rank column)
    let mut rank_of = |partial: usize,
                       descending: bool,
                       rank_exprs: &mut Vec<Expr>|
     -> Result<String, EngineError> {
        if let Some((_, _, name)) = ranked
            .iter()
            .find(|(p, d, _)| *p == partial && *d == descending)
        {
            return Ok(name.clone());
        }
        let value = Expr::Column(per_person_partials[partial].clone());
        // Window plans take bare window expressions: the rank column is named
        // after its expression.
        let rank = row_number()
            .partition_by(cell_groups_for_ranks.clone())
            .order_by(vec![Sort::new(value, !descending, false)])
            .build()
            .map_err(df)?;
        let name = rank.schema_name().to_string();
        rank_exprs.push(rank);
        ranked.push((partial, descending, name.clone()));
        Ok(name)
    };
    let mut trimmed_ranks: Vec<Option<String>> = Vec::new();
    for final_ in &finals {
        trimmed_ranks.push(match *final_ {
            Final::Trimmed {
                partial,
                descending,
                ..
            } => Some(rank_of(partial, descending, &mut rank_exprs)?),
            _ => None,
        });
    }
    if !rank_exprs.is_empty() {
        // One window node per ordering, as DataFusion executes them.
        per_person =
            datafusion::logical_expr::LogicalPlanBuilder::window_plan(per_person, rank_exprs)
                .map_err(df)?;
    }
    // The value of partial `p` for the person of rank `r` (NULL for others).
    let at_rank = |p: usize, rank_column: &str, r: i64| -> Result<Expr, EngineError> {
        when(
            col(Column::from_name(rank_column)).eq(lit(r as u64)),
            Expr::Column(per_person_partials[p].clone()),
        )
        .end()
        .map_err(df)
    };

    // Level 3: per cell.
    let first_value = original_schema.fields().len() - aggr_expr.len();
    let column = |p: usize| Expr::Column(per_person_partials[p].clone());
    let is_float = |p: usize| {
        per_person
            .schema()
            .qualified_field_from_column(&per_person_partials[p])
            .is_ok_and(|(_, f)| f.data_type() == &DataType::Float64)
    };
    // Floating-point sums over a cell's persons are exact, rounded once
    // (`super::exact_sum`): persons reach this aggregate in an order that
    // varies from run to run, and a plain sum's last digits would vary with
    // it. Integer and decimal sums are exact already.
    let sum_over_persons = |p: usize| {
        if is_float(p) {
            exact_sum(column(p))
        } else {
            sum(column(p))
        }
    };
    let mut cell_aggr: Vec<Expr> = Vec::new();
    for (i, final_) in finals.iter().enumerate() {
        let expr = match *final_ {
            Final::Combined(p, Combine::Sum) => sum_over_persons(p),
            Final::Combined(p, how) => combine(column(p), how),
            Final::Ratio(s, c) => {
                // An average: the sum over persons and the count, divided in
                // the projection below.
                cell_aggr.push(sum_over_persons(s).alias(format!("__seuil_sum_{i}")));
                cell_aggr.push(sum_over_persons(c).alias(format!("__seuil_count_{i}")));
                continue;
            }
            Final::Trimmed { partial, rank, .. } => {
                let rank_column = trimmed_ranks[i].clone().unwrap_or_default();
                max(at_rank(partial, &rank_column, rank)?)
            }
            Final::Median(p) => median(column(p)),
        };
        cell_aggr.push(expr.alias(format!("__seuil_value_{i}")));
    }
    cell_aggr.push(count(Expr::Column(per_person_person.clone())).alias(PERSONS_COLUMN));
    for (measure, partial) in dominance_partials.iter().filter(|_| largest > 0) {
        cell_aggr.push(sum_over_persons(*partial).alias(format!("__seuil_total_{measure}")));
        // The largest contributions in the cell's own aggregate, rather than
        // ranking every person of every cell. They are taken as Float64, as
        // the release step reads them: the cast keeps the order, so the n-th
        // largest of the cast values is the cast of the n-th largest.
        let contribution = if is_float(*partial) {
            column(*partial)
        } else {
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(column(*partial)),
                DataType::Float64,
            ))
        };
        for rank in 1..=largest {
            cell_aggr.push(
                nth_largest(contribution.clone(), rank)
                    .alias(format!("__seuil_top{rank}_{measure}")),
            );
        }
    }
    let cells = Aggregate::try_new(Arc::new(per_person), cell_groups, cell_aggr).map_err(df)?;
    let cells_schema = Arc::clone(&cells.schema);
    let group_len = cells.group_expr.len();

    // Final projection: the user's columns in order and types, then persons
    // and the dominance inputs.
    let mut exprs: Vec<Expr> = (0..group_len)
        .map(|i| Expr::Column(output_column(&cells_schema, i)))
        .collect();
    for (i, final_) in finals.iter().enumerate() {
        let field = original_schema.field(first_value + i);
        let name = field.name().clone();
        let value = match final_ {
            Final::Ratio(..) => binary(
                Expr::Cast(datafusion::logical_expr::Cast::new(
                    Box::new(col(Column::from_name(format!("__seuil_sum_{i}")))),
                    DataType::Float64,
                )),
                Operator::Divide,
                datafusion::functions::core::expr_fn::nullif(
                    Expr::Cast(datafusion::logical_expr::Cast::new(
                        Box::new(col(Column::from_name(format!("__seuil_count_{i}")))),
                        DataType::Float64,
                    )),
                    lit(0.0),
                ),
            ),
            _ => col(Column::from_name(format!("__seuil_value_{i}"))),
        };
        exprs.push(
            Expr::TryCast(datafusion::logical_expr::TryCast::new(
                Box::new(value),
                field.data_type().clone(),
            ))
            .alias(name),
        );
    }
    let output_columns = exprs.len();
    exprs.push(col(Column::from_name(PERSONS_COLUMN)));
    let persons = output_columns;
    let mut dominance = Vec::new();
    for (measure, _) in dominance_partials.iter().filter(|_| largest > 0) {
        exprs.push(col(Column::from_name(format!("__seuil_total_{measure}"))));
        let total = exprs.len() - 1;
        let mut tops = Vec::new();
        for rank in 1..=largest {
            exprs.push(col(Column::from_name(format!(
                "__seuil_top{rank}_{measure}"
            ))));
            tops.push(exprs.len() - 1);
        }
        dominance.push(DominanceColumns {
            measure: *measure,
            total,
            largest: tops,
        });
    }
    let projection =
        Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(cells))).map_err(df)?;
    let group_columns = group_len;
    Ok((
        LogicalPlan::Projection(projection),
        CellsLayout {
            output_columns,
            group_columns,
            grouping: grouping_set.as_ref().map(|_| (groups, groups)),
            measures,
            persons,
            dominance,
        },
    ))
}

/// How many largest contributions the role's dominance rules look at.
pub fn dominance_depth(role: &Role) -> usize {
    let nk = role.dominance.map_or(0, |d| d.n as usize);
    let p = if role.p_percent.is_some() { 2 } else { 0 };
    nk.max(p)
}

fn binary(left: Expr, op: Operator, right: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)))
}

/// The same aggregate call (arguments, filter) with another function.
fn with_function(function: &AggregateFunction, name: &str) -> Result<Expr, EngineError> {
    let udaf = match name {
        "sum" => datafusion::functions_aggregate::sum::sum_udaf(),
        _ => datafusion::functions_aggregate::count::count_udaf(),
    };
    Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
        udaf,
        function.params.args.clone(),
        false,
        function.params.filter.clone(),
        Vec::new(),
        None,
    )))
}
