//! The cells plan of dp mode: each person's contribution bounded before
//! cells are formed (DESIGN.md §2, "dp"), so that the noise the release
//! step adds can be calibrated to what one person can change.
//!
//! One plan, one pass over the data, in levels:
//!
//! 1. per cell and person: each value's partial, bounded: a count of rows
//!    is capped at `max_rows_per_cell` (a count of persons at 1), a sum of a
//!    sensitive column is the person's sum clamped to the column's bounds
//!    and rounded to the grid of sums, as an integer of grid units;
//! 2. the person's cells ranked by a keyed hash of the person and the cell
//!    ([`crate::functions::contribution_choice`]), and only the first
//!    `max_groups_per_person` kept: the choice depends on neither the data
//!    of other persons nor anything the querier controls;
//! 3. per cell: the sums of the bounded partials, and the exact number of
//!    persons who kept the cell, which partition selection reads;
//! 4. a projection to the user's columns, names and types, then the
//!    persons and the bounded values the noise is added to
//!    ([`NoisyValue`]).
//!
//! Levels 1 and 2 are one streaming pass ([`crate::contributions`]) when
//! the rows come person by person (a scan of a keyed table of the person
//! index), which also adds level 3's totals within each partition, and
//! DataFusion's aggregate and window otherwise. Either way level 3 adds
//! rows of partials and of persons kept ([`PERSONS_KEPT`]).
//!
//! What has no mechanism yet is refused here, before anything runs:
//! grouping sets, order statistics, spreads, sums without bounds.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, DFSchemaRef};
use datafusion::functions::core::expr_fn::{coalesce, greatest, least};
use datafusion::functions::math::expr_fn::round;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_window::expr_fn::lag;
use datafusion::logical_expr::expr::{AggregateFunction, Sort};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, ExprFunctionExt, Extension, LogicalPlan, LogicalPlanBuilder,
    Operator, Projection, TryCast, col, lit, when,
};

use super::exprs::{average, cast};
use super::layout::{Bounding, CellsLayout, NoisyValue};
use super::measures::{Measure, Value};
use crate::contributions::{
    BoundContributions, Bounds, PERSONS_KEPT, Partial, partial_name, streams_by_person,
};
use crate::error::{EngineError, Refusal, Rule, place_of, plan_fault};
use crate::functions::{contribution_choice, exact_float_sum};
use crate::lineage::{PERSONS_COLUMN, PersonLineage, output_column};

/// How a level-1 partial is bounded.
#[derive(Clone, Copy)]
enum Bound {
    /// A count, capped.
    Cap(u32),
    /// A sum, clamped.
    Clamp(f64, f64),
}

impl Bound {
    fn same_as(&self, other: &Bound) -> bool {
        match (self, other) {
            (Bound::Cap(a), Bound::Cap(b)) => a == b,
            (Bound::Clamp(a, b), Bound::Clamp(c, d)) => a == c && b == d,
            _ => false,
        }
    }
}

/// One partial of a person in a cell: the values counted (non-null) or
/// added (`Float64`), the rows they are taken from, and the bound.
#[derive(Clone)]
struct PartialOf {
    argument: Expr,
    filter: Option<Expr>,
    bound: Bound,
}

impl PartialOf {
    fn count(value: &Value, argument: Expr, cap: u32) -> Self {
        Self {
            argument,
            filter: value.filter.clone(),
            bound: Bound::Cap(cap),
        }
    }

    /// A person's sum of `argument` in a cell, as `value` filters it, to be
    /// clamped to `bounds`: the partial of a SUM and of an AVG alike.
    fn clamped_sum(value: &Value, argument: &Expr, (lower, upper): (f64, f64)) -> Self {
        Self {
            argument: cast(argument.clone(), DataType::Float64),
            filter: value.filter.clone(),
            bound: Bound::Clamp(lower, upper),
        }
    }

    fn same_as(&self, other: &PartialOf) -> bool {
        self.argument == other.argument
            && self.filter == other.filter
            && self.bound.same_as(&other.bound)
    }

    /// The partial as an aggregate over a person's rows in a cell (before
    /// its bound).
    fn aggregate(&self, input: &DFSchema) -> Expr {
        let udaf = match self.bound {
            Bound::Cap(_) => count_udaf(),
            Bound::Clamp(..) => sum_udaf(),
        };
        let call = Expr::AggregateFunction(AggregateFunction::new_udf(
            udaf,
            vec![self.argument.clone()],
            false,
            self.filter.clone().map(Box::new),
            Vec::new(),
            None,
        ));
        exact_float_sum(call, input)
    }

    /// The partial's value in one row: the argument where the row passes
    /// the filter, NULL elsewhere (neither counted nor added).
    fn in_row(&self) -> Result<Expr, EngineError> {
        match &self.filter {
            None => Ok(self.argument.clone()),
            Some(filter) => when(filter.clone(), self.argument.clone())
                .end()
                .map_err(plan_fault),
        }
    }

    /// The partial as [`BoundContributions`] bounds it.
    fn streamed(&self, sum_grid_power: i32) -> Partial {
        match self.bound {
            Bound::Cap(cap) => Partial::Count { cap },
            Bound::Clamp(lower, upper) => Partial::ClampedSum {
                lower,
                upper,
                grid_power: sum_grid_power,
            },
        }
    }
}

/// How one user value is made of its bounded partials.
enum Made {
    /// The selection's count of persons (with the partial that counts them,
    /// for the exact value the cells plan shows).
    Persons(usize),
    /// A count of rows.
    Rows(usize, u32),
    /// A sum.
    Sum(usize, (f64, f64)),
    /// A sum over a count.
    Avg(usize, usize, (f64, f64), u32),
}

fn refuse(value: &Value, what: &str, hint: &str) -> EngineError {
    let name = match &value.call {
        Expr::Alias(alias) => alias.name.clone(),
        other => other.schema_name().to_string(),
    };
    EngineError::Refused(
        Refusal::new(
            Rule::Mode,
            format!("{name}: {what} in differential privacy mode"),
            hint,
        )
        .at(place_of(&value.call)),
    )
}

/// Builds the bounded cells plan of a released aggregate.
pub(super) fn cells_plan(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    values: &[Value],
    lineage: &PersonLineage,
    bounding: &Bounding,
    original_schema: &DFSchemaRef,
) -> Result<(LogicalPlan, CellsLayout), EngineError> {
    if group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
        return Err(EngineError::refused(
            Rule::Mode,
            "GROUPING SETS, ROLLUP and CUBE have no noise mechanism in differential privacy mode yet",
            "run one query per grouping: each is charged to the budget",
        ));
    }
    let max_rows = bounding.max_rows_per_cell;
    let mut partials: Vec<PartialOf> = Vec::new();
    // The same partial is computed once (`SUM(x)` next to `AVG(x)`):
    // DataFusion's planning would give two copies' common parts one name
    // twice.
    let mut add = |partial: PartialOf| {
        if let Some(known) = partials.iter().position(|p| p.same_as(&partial)) {
            return known;
        }
        partials.push(partial);
        partials.len() - 1
    };
    let mut made = Vec::with_capacity(values.len());
    for value in values {
        made.push(match &value.measure {
            Measure::Count { argument } => {
                let argument = argument.clone().unwrap_or_else(|| lit(1i64));
                Made::Rows(add(PartialOf::count(value, argument, max_rows)), max_rows)
            }
            // A person counts once in a cell: 1 when any of its rows there
            // passes the value's FILTER. The person column stands for the
            // key the user counts (the same persons): the plan reads it
            // anyway, where the key may be a string column read only for
            // this.
            Measure::CountPersons { .. } => {
                let p = add(PartialOf::count(value, col(lineage.person.clone()), 1));
                if value.filter.is_none() {
                    Made::Persons(p)
                } else {
                    Made::Rows(p, 1)
                }
            }
            Measure::Sum {
                argument,
                bounds: Some(bounds),
            } => Made::Sum(add(PartialOf::clamped_sum(value, argument, *bounds)), *bounds),
            Measure::Avg {
                argument,
                bounds: Some((lower, upper)),
            } => {
                let s = add(PartialOf::clamped_sum(value, argument, (*lower, *upper)));
                let c = add(PartialOf::count(value, argument.clone(), max_rows));
                Made::Avg(s, c, (*lower, *upper), max_rows)
            }
            Measure::Sum { bounds: None, .. } | Measure::Avg { bounds: None, .. } => {
                return Err(refuse(
                    value,
                    "a sum or an average needs a column whose policy gives bounds",
                    "sum or average a sensitive column with bounds, or count rows",
                ));
            }
            Measure::Order { .. } => {
                return Err(refuse(
                    value,
                    "MIN, MAX and MEDIAN have no noise mechanism",
                    "count persons or rows by bands of the column instead",
                ));
            }
            Measure::Direct { .. } => {
                return Err(refuse(
                    value,
                    "this aggregate has no noise mechanism",
                    "release counts, COUNT(DISTINCT <person>), and sums and averages of bounded columns",
                ));
            }
        });
    }

    // Levels 1 and 2: each person's bounded partials in its chosen cells.
    let groups = group_expr.len();
    let chosen = if streams_by_person(&input, &lineage.person) {
        streamed_partials(input, group_expr, &partials, lineage, bounding)?
    } else {
        aggregated_partials(input, group_expr, &partials, lineage, bounding)?
    };

    // Level 3: per cell.
    let schema = Arc::clone(chosen.schema());
    let cell: Vec<Expr> = (0..groups)
        .map(|i| Expr::Column(output_column(&schema, i)))
        .collect();
    let mut sums: Vec<Expr> = (0..partials.len())
        .map(|i| {
            let partial = col(Column::from_name(partial_name(i)));
            sum(partial).alias(format!("__seuil_bounded_{i}"))
        })
        .collect();
    sums.push(sum(col(Column::from_name(PERSONS_KEPT))).alias(PERSONS_COLUMN));
    let cells = Aggregate::try_new(Arc::new(chosen), cell, sums).map_err(plan_fault)?;

    // Level 4: the user's columns, then what the release step reads.
    let cells_schema = Arc::clone(&cells.schema);
    let named = |name: String| col(Column::from_name(name));
    let bounded_column = |p: usize| named(format!("__seuil_bounded_{p}"));
    let mut exprs: Vec<Expr> = (0..groups)
        .map(|i| Expr::Column(output_column(&cells_schema, i)))
        .collect();
    let first_value = original_schema.fields().len() - values.len();
    for (i, m) in made.iter().enumerate() {
        let field = original_schema.field(first_value + i);
        // The exact bounded value stands in the user's column until the
        // release step replaces it with a noisy one.
        let grid = lit(2f64.powi(bounding.sum_grid_power));
        let exact = match m {
            Made::Persons(p) | Made::Rows(p, _) => bounded_column(*p),
            Made::Sum(p, _) => cast(bounded_column(*p), DataType::Float64) * grid,
            Made::Avg(s, c, _, _) => average(
                cast(bounded_column(*s), DataType::Float64) * grid,
                bounded_column(*c),
            ),
        };
        exprs.push(
            Expr::TryCast(TryCast::new(Box::new(exact), field.data_type().clone()))
                .alias(field.name()),
        );
    }
    let output_columns = exprs.len();
    let persons = output_columns;
    // No person at all, in an aggregate without groups, is a count of 0.
    exprs.push(coalesce(vec![named(PERSONS_COLUMN.to_string()), lit(0i64)]).alias(PERSONS_COLUMN));
    for p in 0..partials.len() {
        exprs.push(cast(bounded_column(p), DataType::Int64).alias(format!("__seuil_bounded_{p}")));
    }
    let column_of = |p: usize| persons + 1 + p;
    let noisy = made
        .iter()
        .map(|m| match *m {
            Made::Persons(_) => NoisyValue::Persons,
            Made::Rows(p, per_person) => NoisyValue::Rows {
                column: column_of(p),
                per_person,
            },
            Made::Sum(p, bounds) => NoisyValue::Sum {
                column: column_of(p),
                bounds,
            },
            Made::Avg(s, c, bounds, per_person) => NoisyValue::Avg {
                sum: column_of(s),
                rows: column_of(c),
                bounds,
                per_person,
            },
        })
        .collect();
    let measures = values
        .iter()
        .map(|value| super::layout::MeasureLayout {
            kind: value.kind(),
            contributors: None,
            rounded: !value.is_structural(),
        })
        .collect();
    let projection =
        Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(cells))).map_err(plan_fault)?;
    Ok((
        LogicalPlan::Projection(projection),
        CellsLayout {
            output_columns,
            group_columns: groups,
            grouping: None,
            measures,
            persons,
            dominance: Vec::new(),
            noisy,
        },
    ))
}

/// Levels 1 and 2 over rows that come person by person: one pass of
/// [`BoundContributions`], which keeps only the current person's cells.
fn streamed_partials(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    partials: &[PartialOf],
    lineage: &PersonLineage,
    bounding: &Bounding,
) -> Result<LogicalPlan, EngineError> {
    let groups = group_expr.len();
    // The cell's columns keep their names, as the aggregate per cell and
    // person would name them.
    let mut exprs = group_expr;
    exprs.push(col(lineage.person.clone()));
    for (i, partial) in partials.iter().enumerate() {
        exprs.push(partial.in_row()?.alias(format!("__seuil_argument_{i}")));
    }
    let rows = Projection::try_new(exprs, Arc::new(input)).map_err(plan_fault)?;
    let bounds = Bounds {
        groups,
        partials: partials
            .iter()
            .map(|p| p.streamed(bounding.sum_grid_power))
            .collect(),
        max_groups_per_person: bounding.max_groups_per_person,
    };
    let node =
        BoundContributions::try_new(LogicalPlan::Projection(rows), bounds).map_err(plan_fault)?;
    Ok(LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    }))
}

/// Levels 1 and 2 by DataFusion's operators, over any input: an aggregate
/// per (cell, person), each partial bounded, then a window over each
/// person's cells in the order of the keyed hash.
fn aggregated_partials(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    partials: &[PartialOf],
    lineage: &PersonLineage,
    bounding: &Bounding,
) -> Result<LogicalPlan, EngineError> {
    let person = lineage.person.clone();
    let groups = group_expr.len();
    let mut level1_groups = group_expr;
    level1_groups.push(col(person));
    let aggregates: Vec<Expr> = partials
        .iter()
        .enumerate()
        .map(|(i, partial)| partial.aggregate(input.schema()).alias(partial_name(i)))
        .collect();
    let level1 =
        Aggregate::try_new(Arc::new(input), level1_groups, aggregates).map_err(plan_fault)?;
    let schema = Arc::clone(&level1.schema);
    let cell: Vec<Expr> = (0..groups)
        .map(|i| Expr::Column(output_column(&schema, i)))
        .collect();
    let person = Expr::Column(output_column(&schema, groups));
    let mut exprs: Vec<Expr> = cell.clone();
    exprs.push(person.clone());
    for (i, partial) in partials.iter().enumerate() {
        let column = Expr::Column(output_column(&schema, groups + 1 + i));
        let name = partial_name(i);
        exprs.push(match partial.bound {
            Bound::Cap(cap) => least(vec![column, lit(i64::from(cap))]).alias(name),
            // A person without a value in the cell (all rows filtered out)
            // stays NULL: it adds nothing.
            Bound::Clamp(lower, upper) => {
                let clamped = greatest(vec![lit(lower), least(vec![column, lit(upper)])]);
                let units = round(vec![clamped * lit(2f64.powi(-bounding.sum_grid_power))]);
                cast(units, DataType::Int64).alias(name)
            }
        });
    }
    // Each row is one person in one cell, as the streaming pass counts.
    exprs.push(lit(1i64).alias(PERSONS_KEPT));
    exprs.push(
        contribution_choice(bounding.key.bytes(), person.clone(), cell.clone())
            .alias("__seuil_choice"),
    );
    let bounded =
        Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(level1))).map_err(plan_fault)?;
    let schema = Arc::clone(&bounded.schema);
    let person = Expr::Column(output_column(&schema, groups));

    // Level 2: each person's first cells by the keyed hash. With the rows
    // in order of person, then hash, a row is among its person's first k
    // when the row k places before it is another person's, or there is
    // none: `row_number() <= k` over `PARTITION BY person`, without the
    // state DataFusion's window keeps for each partition (each person),
    // which made it cost more than the rest of the plan on a million
    // persons (`seuil-bench dp`). Exactly k rows of a person pass, ties of
    // the hash included.
    let by_person_then_choice = vec![
        Sort::new(person.clone(), true, false),
        Sort::new(col(Column::from_name("__seuil_choice")), true, false),
    ];
    let before = lag(
        person.clone(),
        Some(i64::from(bounding.max_groups_per_person)),
        None,
    )
    .order_by(by_person_then_choice)
    .build()
    .map_err(plan_fault)?;
    let before_name = before.schema_name().to_string();
    let ranked = LogicalPlanBuilder::window_plan(LogicalPlan::Projection(bounded), vec![before])
        .map_err(plan_fault)?;
    let another_person = Expr::BinaryExpr(BinaryExpr::new(
        Box::new(col(Column::from_name(before_name))),
        Operator::IsDistinctFrom,
        Box::new(person),
    ));
    LogicalPlanBuilder::from(ranked)
        .filter(another_person)
        .map_err(plan_fault)?
        .build()
        .map_err(plan_fault)
}
