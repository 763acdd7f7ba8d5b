//! The cells plan of sums and averages of sensitive columns in one
//! aggregate over the cell's rows: each person's contribution clamped, and
//! the largest contributions for the dominance rules, found by
//! [`crate::functions::person_sums`] from the runs of persons in each cell,
//! without the per-person level of [`super::per_person`].
//!
//! It serves the aggregates that need persons only for clamped sums:
//! without grouping sets (whose totals need each person's partials per
//! released cell), without order statistics (which rank persons), over a
//! scan whose person is a number of the person index, summing signed
//! integers or floating-point values. The other values of the aggregate are
//! computed over the cell's rows as the user wrote them, and the persons of
//! the cell and of each value are counted up to the threshold, as in
//! [`super::single_level`]. Everything else goes to [`super::per_person`].
//!
//! Over a scan of one keyed table, where rows come person by person, each
//! cell closes a person as soon as the next one comes and keeps no run
//! ([`crate::contributions::ordered_sums`]).
//!
//! The released values are the per-person plan's: the same clamped
//! contributions, added exactly (floating point) or as `sum` adds integers,
//! the same largest contributions, the same contributors.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchemaRef};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, LogicalPlan, Projection, TryCast, col,
};

use super::exprs::{average, cast, with_function};
use super::layout::{CellsLayout, CellsNeeds, DominanceColumns, measure_layouts};
use super::measures::{Measure, Value};
use super::single_level::{contributor_conditions, persons_and_contributors};
use crate::error::{EngineError, plan_fault};
use crate::functions::person_sums::{SUM_FIELD, person_sums, top_field};
use crate::lineage::{PERSONS_COLUMN, PersonLineage, output_column};

/// Whether the aggregate's values can be computed by this plan (see the
/// module's documentation).
pub(super) fn serves(
    values: &[Value],
    group_expr: &[Expr],
    input: &LogicalPlan,
    lineage: &PersonLineage,
) -> bool {
    let schema = input.schema();
    let numbered_person = schema
        .qualified_field_from_column(&lineage.person)
        .map(|(_, field)| field)
        .is_ok_and(|f| f.data_type() == &DataType::UInt32);
    let summable = |argument: &Expr| {
        argument.get_type(schema).is_ok_and(|t| {
            matches!(
                t,
                DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::Float32
                    | DataType::Float64
            )
        })
    };
    numbered_person
        && !matches!(group_expr, [Expr::GroupingSet(_)])
        && values.iter().all(|value| match &value.measure {
            Measure::Sum {
                argument,
                bounds: Some(_),
            }
            | Measure::Avg {
                argument,
                bounds: Some(_),
            } => summable(argument),
            // Spreads and other direct values are refused next to clamped
            // sums (the per-person plan says so); order statistics rank
            // persons.
            Measure::Order { .. } | Measure::Direct { .. } => false,
            Measure::Count { .. }
            | Measure::CountPersons { .. }
            | Measure::Sum { .. }
            | Measure::Avg { .. } => true,
        })
}

/// How one user value is read from the cells aggregate.
enum Read {
    /// The struct column of its clamped sum.
    Sum(String),
    /// Its clamped sum over the count of its values.
    Average { sums: String, count: String },
    /// Its own column.
    Plain(String),
}

/// Adds `expr` to the aggregate's calls as `name`, unless the same call is
/// there already (`SUM(x)` next to `AVG(x)` clamp the same sums): returns
/// the name it is read under. DataFusion's planning would otherwise give
/// the two copies' common parts one name twice.
fn add_call(aggregates: &mut Vec<Expr>, expr: Expr, name: String) -> String {
    for known in aggregates.iter() {
        if let Expr::Alias(alias) = known
            && *alias.expr == expr
        {
            return alias.name.clone();
        }
    }
    aggregates.push(expr.alias(&name));
    name
}

/// Builds the plan; `original_schema` is the user's aggregate's.
pub(super) fn cells_plan(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    values: &[Value],
    lineage: &PersonLineage,
    needs: CellsNeeds,
    original_schema: &DFSchemaRef,
) -> Result<(LogicalPlan, CellsLayout), EngineError> {
    let (conditions, contributor_of) = contributor_conditions(values, &input);
    let person = col(lineage.person.clone());
    let mut aggregates: Vec<Expr> = Vec::new();
    let mut reads = Vec::with_capacity(values.len());
    // (value, struct column) of each sensitive sum, for the dominance rules.
    let mut sensitive: Vec<(usize, String)> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let clamped = |argument: &Expr, bounds: (f64, f64)| {
            person_sums(
                person.clone(),
                argument.clone(),
                bounds,
                needs.largest,
                value.filter.clone(),
            )
        };
        match &value.measure {
            Measure::Sum {
                argument,
                bounds: Some(bounds),
            } => {
                let name = add_call(
                    &mut aggregates,
                    clamped(argument, *bounds),
                    format!("__seuil_sums_{i}"),
                );
                sensitive.push((i, name.clone()));
                reads.push(Read::Sum(name));
            }
            Measure::Avg {
                argument,
                bounds: Some(bounds),
            } => {
                let sums = add_call(
                    &mut aggregates,
                    clamped(argument, *bounds),
                    format!("__seuil_sums_{i}"),
                );
                let count = add_call(
                    &mut aggregates,
                    with_function(value, count_udaf(), vec![argument.clone()], false),
                    format!("__seuil_count_{i}"),
                );
                sensitive.push((i, sums.clone()));
                reads.push(Read::Average { sums, count });
            }
            _ => {
                let name = add_call(
                    &mut aggregates,
                    value.call.clone().unalias(),
                    format!("__seuil_value_{i}"),
                );
                reads.push(Read::Plain(name));
            }
        }
    }
    aggregates.extend(persons_and_contributors(
        &person,
        needs.persons_up_to,
        &conditions,
    ));
    let cells = Aggregate::try_new(Arc::new(input), group_expr, aggregates).map_err(plan_fault)?;
    let cells_schema = Arc::clone(&cells.schema);
    let group_len = cells.group_expr.len();
    let named = |name: &str| col(Column::from_name(name));
    let sum_of = |name: &str| get_field(named(name), SUM_FIELD);
    let mut exprs: Vec<Expr> = (0..group_len)
        .map(|i| Expr::Column(output_column(&cells_schema, i)))
        .collect();
    let first_value = original_schema.fields().len() - values.len();
    for (i, read) in reads.iter().enumerate() {
        let field = original_schema.field(first_value + i);
        let value = match read {
            Read::Sum(name) => sum_of(name),
            Read::Average { sums, count } => average(sum_of(sums), named(count)),
            Read::Plain(name) => named(name),
        };
        exprs.push(
            Expr::TryCast(TryCast::new(Box::new(value), field.data_type().clone()))
                .alias(field.name()),
        );
    }
    let output_columns = exprs.len();
    let persons = output_columns;
    exprs.push(named(PERSONS_COLUMN));
    for c in 0..conditions.len() {
        exprs.push(named(&format!("__seuil_contributors_{c}")));
    }
    let mut dominance = Vec::new();
    for (measure, name) in sensitive.iter().filter(|_| needs.largest > 0) {
        exprs.push(cast(sum_of(name), DataType::Float64).alias(format!("__seuil_total_{measure}")));
        let total = exprs.len() - 1;
        let mut largest = Vec::new();
        for rank in 1..=needs.largest {
            exprs.push(
                get_field(named(name), top_field(rank))
                    .alias(format!("__seuil_top{rank}_{measure}")),
            );
            largest.push(exprs.len() - 1);
        }
        dominance.push(DominanceColumns {
            measure: *measure,
            total,
            largest,
        });
    }
    let measures = measure_layouts(values, &contributor_of, persons);
    let projection =
        Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(cells))).map_err(plan_fault)?;
    Ok((
        LogicalPlan::Projection(projection),
        CellsLayout {
            output_columns,
            group_columns: group_len,
            grouping: None,
            measures,
            persons,
            dominance,
            noisy: Vec::new(),
        },
    ))
}
