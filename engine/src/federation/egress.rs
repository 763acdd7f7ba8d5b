//! What a data node lets out: cells, never rows, identifiers or persons.
//!
//! A node checks every plan it receives again, on its own, against its own
//! copy of the policy: the coordinator's rewrite is not trusted to have
//! been the one that built it. The check follows, for every column of
//! every operator, which private columns its values can show (an exposure):
//!
//! - the plan reads only the node's own tables (decoding already failed for
//!   any other) through plain relational operators; anything else (writes,
//!   extension nodes but the one that bounds dp contributions, recursive
//!   queries, unnest) is refused;
//! - its output is grouped: an aggregate stands between every scan and the
//!   output, so no row of a private table leaves as such;
//! - no output column shows the values of an identifier column or of a
//!   person column (grouping by them, or an aggregate such as `min` that
//!   returns one of their values); counting them is fine;
//! - the output holds the persons column of a cells plan, so that the
//!   coordinator's release step has the person counts it thresholds on.

use std::collections::BTreeSet;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::DFSchemaRef;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::grouping_set_to_exprlist;
use datafusion::logical_expr::{Expr, LogicalPlan};
use seuil_policies::{ColumnClass, Policy};

use super::codec::identify;
use crate::catalog::DataCatalog;
use crate::contributions::{BoundContributions, Partial};
use crate::error::{EngineError, Rule};
use crate::functions::{KnownAggregate, PersonSums};
use crate::lineage::{PERSON_NUMBER, PERSONS_COLUMN};

/// The private columns whose values one column of an operator can show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Exposure {
    /// (table, column) pairs.
    shows: BTreeSet<(String, String)>,
}

impl Exposure {
    fn union<'a>(parts: impl IntoIterator<Item = &'a Exposure>) -> Exposure {
        Exposure {
            shows: parts
                .into_iter()
                .flat_map(|p| p.shows.iter().cloned())
                .collect(),
        }
    }
}

/// An operator's output: each column's exposure, and whether its rows are
/// grouped (an aggregate stands between them and every scan).
struct Output {
    columns: Vec<Exposure>,
    grouped: bool,
}

fn refused(what: impl Into<String>) -> EngineError {
    EngineError::refused(
        Rule::AggregatesOnly,
        what,
        "a data node runs the cells plans of its coordinator only",
    )
}

/// The exposure of `expr` over an input of `schema` and `columns`. A
/// column that does not resolve in the input is refused, not ignored: what
/// cannot be traced is not let out.
fn exposure_of(
    expr: &Expr,
    schema: &DFSchemaRef,
    columns: &[Exposure],
) -> Result<Exposure, EngineError> {
    let mut parts = Vec::new();
    for column in expr.column_refs() {
        let traced = schema
            .index_of_column(column)
            .ok()
            .and_then(|i| columns.get(i))
            .ok_or_else(|| refused("the plan refers to a column its input does not have"))?;
        parts.push(traced);
    }
    Ok(Exposure::union(parts))
}

/// Whether `expr` holds a subquery, whose plan is not an input of its
/// operator and so would escape the check: cells plans have none (the
/// rewrite turns subqueries into joins first).
fn holds_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::OuterReferenceColumn(..)
        ))
    })
    .unwrap_or(true)
}

/// What an aggregate's value can show: nothing for counts, its arguments'
/// values for every other function (`min`, `max`, sums, largest values).
fn aggregate_exposure(
    expr: &Expr,
    schema: &DFSchemaRef,
    columns: &[Exposure],
) -> Result<Exposure, EngineError> {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    if let Expr::AggregateFunction(call @ AggregateFunction { func, params }) = inner {
        let counts = KnownAggregate::of(call) == KnownAggregate::Count
            || func.name() == "seuil_persons_up_to";
        if counts {
            return Ok(Exposure::default());
        }
        // The person argument of per-person sums is what they sum by, not
        // what they show.
        let shown = if func.name() == PersonSums::NAME {
            params.args.get(1..).unwrap_or_default()
        } else {
            &params.args[..]
        };
        let parts = shown
            .iter()
            .map(|a| exposure_of(a, schema, columns))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Exposure::union(&parts));
    }
    exposure_of(inner, schema, columns)
}

/// What a window function's value can show: its arguments' values. Its
/// partition and order keys choose which rows it reads and in what order,
/// and are not among its values (`row_number() OVER (PARTITION BY
/// ben_nir_psa)` shows a rank, not the identifier).
fn window_exposure(
    expr: &Expr,
    schema: &DFSchemaRef,
    columns: &[Exposure],
) -> Result<Exposure, EngineError> {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    match inner {
        Expr::WindowFunction(window) => {
            let parts = window
                .params
                .args
                .iter()
                .map(|a| exposure_of(a, schema, columns))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Exposure::union(&parts))
        }
        other => exposure_of(other, schema, columns),
    }
}

fn output_of(plan: &LogicalPlan, data: &DataCatalog) -> Result<Output, EngineError> {
    if plan.expressions().iter().any(holds_subquery) {
        return Err(refused("the plan holds a subquery"));
    }
    let inputs: Vec<Output> = plan
        .inputs()
        .into_iter()
        .map(|input| output_of(input, data))
        .collect::<Result<_, _>>()?;
    let input_schema = |i: usize| plan.inputs()[i].schema().clone();
    Ok(match plan {
        LogicalPlan::TableScan(scan) => {
            let identity = source_as_provider(&scan.source)
                .ok()
                .and_then(|provider| identify(data, &provider))
                .ok_or_else(|| refused("the plan reads a table this node does not hold"))?;
            Output {
                columns: scan
                    .projected_schema
                    .fields()
                    .iter()
                    .map(|f| Exposure {
                        shows: [(identity.table.clone(), f.name().clone())].into(),
                    })
                    .collect(),
                grouped: false,
            }
        }
        LogicalPlan::Projection(projection) => {
            let schema = input_schema(0);
            Output {
                columns: projection
                    .expr
                    .iter()
                    .map(|e| exposure_of(e, &schema, &inputs[0].columns))
                    .collect::<Result<_, _>>()?,
                grouped: inputs[0].grouped,
            }
        }
        LogicalPlan::Aggregate(aggregate) => {
            let schema = input_schema(0);
            let groups = grouping_set_to_exprlist(&aggregate.group_expr)
                .map_err(|_| refused("the plan's grouping cannot be read"))?;
            let mut columns: Vec<Exposure> = groups
                .iter()
                .map(|e| exposure_of(e, &schema, &inputs[0].columns))
                .collect::<Result<_, _>>()?;
            // The grouping id of grouping sets shows nothing.
            let values = aggregate.aggr_expr.len();
            while columns.len() + values < aggregate.schema.fields().len() {
                columns.push(Exposure::default());
            }
            for value in &aggregate.aggr_expr {
                columns.push(aggregate_exposure(value, &schema, &inputs[0].columns)?);
            }
            Output {
                columns,
                grouped: true,
            }
        }
        LogicalPlan::Window(window) => {
            let schema = input_schema(0);
            let mut columns = inputs[0].columns.clone();
            for value in &window.window_expr {
                columns.push(window_exposure(value, &schema, &inputs[0].columns)?);
            }
            Output {
                columns,
                grouped: inputs[0].grouped,
            }
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_) => {
            let mut inputs = inputs;
            inputs.remove(0)
        }
        LogicalPlan::Distinct(_) => {
            let mut inputs = inputs;
            Output {
                grouped: true,
                ..inputs.remove(0)
            }
        }
        LogicalPlan::Join(join) => {
            let mut columns = Vec::new();
            let width = join.schema.fields().len();
            for input in &inputs {
                columns.extend(input.columns.iter().cloned());
            }
            // Semi and anti joins keep one side's columns only.
            columns.truncate(width);
            if columns.len() < width {
                return Err(refused("the plan holds a join of unexpected shape"));
            }
            Output {
                columns,
                grouped: inputs.iter().all(|i| i.grouped),
            }
        }
        LogicalPlan::Union(_) => {
            let width = plan.schema().fields().len();
            let columns = (0..width)
                .map(|i| Exposure::union(inputs.iter().filter_map(|input| input.columns.get(i))))
                .collect();
            Output {
                columns,
                grouped: inputs.iter().all(|i| i.grouped),
            }
        }
        LogicalPlan::Extension(extension) => {
            let Some(node) = extension.node.as_any().downcast_ref::<BoundContributions>() else {
                return Err(refused("a data node runs no extension node but seuil's"));
            };
            // Like the aggregates it stands for: the cell's columns, then
            // partials that show what they sum (a count shows nothing), then
            // the count of persons; the person is not in its output.
            let bounds = node.bounds();
            let input = &inputs[0].columns;
            let mut columns = input[..bounds.groups].to_vec();
            for (i, partial) in bounds.partials.iter().enumerate() {
                columns.push(match partial {
                    Partial::Count { .. } => Exposure::default(),
                    Partial::ClampedSum { .. } => input[bounds.groups + 1 + i].clone(),
                });
            }
            columns.push(Exposure::default());
            Output {
                columns,
                grouped: true,
            }
        }
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Output {
            columns: vec![Exposure::default(); plan.schema().fields().len()],
            grouped: true,
        },
        other => {
            return Err(refused(format!(
                "a data node does not run {} operators",
                other.display()
            )));
        }
    })
}

/// Whether (table, column) holds identifiers or persons under `policy`.
fn shows_persons(policy: &Policy, table: &str, column: &str) -> bool {
    column == PERSON_NUMBER
        || column.starts_with(crate::lineage::PERSON_COLUMN)
        || (table == policy.person.table && column == policy.person.column)
        || policy.column_class(table, column) == Some(ColumnClass::Identifier)
}

/// Checks that `plan`, a plan a node received, lets out cells only.
pub fn check_egress(
    plan: &LogicalPlan,
    policy: &Policy,
    data: &DataCatalog,
) -> Result<(), EngineError> {
    let output = output_of(plan, data)?;
    if !output.grouped {
        return Err(refused("the plan would send rows of a private table"));
    }
    let schema = plan.schema();
    for (field, exposure) in schema.fields().iter().zip(&output.columns) {
        if exposure
            .shows
            .iter()
            .any(|(table, column)| shows_persons(policy, table, column))
        {
            return Err(refused(format!(
                "output column {} would show identifier or person values",
                field.name()
            )));
        }
    }
    let persons = schema
        .fields()
        .iter()
        .zip(&output.columns)
        .any(|(field, exposure)| field.name() == PERSONS_COLUMN && exposure.shows.is_empty());
    if !persons {
        return Err(refused(
            "the plan's output is not cells: it has no persons column",
        ));
    }
    Ok(())
}
