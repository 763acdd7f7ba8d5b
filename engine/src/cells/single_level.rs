//! The cells plan of values computed over a cell's rows: the user's
//! aggregate as written, with the persons of each cell and of each value
//! counted up to the threshold.

use std::sync::Arc;

use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, col};

use super::layout::{CellsLayout, CellsNeeds, grouping_info, measure_layouts};
use super::measures::Value;
use crate::error::{EngineError, plan_fault};
use crate::functions::persons_up_to;
use crate::lineage::PERSONS_COLUMN;
use crate::lineage::PersonLineage;

/// The persons counted up to `k` over the rows `rows` keeps (all when `None`).
pub(super) fn persons_of(person: Expr, k: u32, rows: Option<Expr>) -> Expr {
    match (persons_up_to(person, k), rows) {
        (Expr::AggregateFunction(mut call), Some(rows)) => {
            call.params.filter = Some(Box::new(rows));
            Expr::AggregateFunction(call)
        }
        (call, _) => call,
    }
}

/// The persons of each cell and the contributors of each condition of
/// `conditions`, counted up to `k`, named as the release step reads them.
pub(super) fn persons_and_contributors(person: &Expr, k: u32, conditions: &[Expr]) -> Vec<Expr> {
    let mut columns = vec![persons_of(person.clone(), k, None).alias(PERSONS_COLUMN)];
    for (i, rows) in conditions.iter().enumerate() {
        columns.push(
            persons_of(person.clone(), k, Some(rows.clone()))
                .alias(format!("__seuil_contributors_{i}")),
        );
    }
    columns
}

/// The contributor columns of `values`: for each value, the position of its
/// contributing-rows condition in `conditions` (shared by values with the
/// same condition), or `None` when all the cell's rows contribute.
pub(super) fn contributor_conditions(
    values: &[Value],
    input: &LogicalPlan,
) -> (Vec<Expr>, Vec<Option<usize>>) {
    let mut conditions: Vec<Expr> = Vec::new();
    let positions = values
        .iter()
        .map(|value| {
            let rows = value.contributing_rows(input.schema())?;
            Some(match conditions.iter().position(|c| *c == rows) {
                Some(position) => position,
                None => {
                    conditions.push(rows);
                    conditions.len() - 1
                }
            })
        })
        .collect();
    (conditions, positions)
}

/// Builds the single-level cells plan.
pub(super) fn cells_plan(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    values: &[Value],
    lineage: &PersonLineage,
    needs: CellsNeeds,
) -> Result<(LogicalPlan, CellsLayout), EngineError> {
    let (conditions, positions) = contributor_conditions(values, &input);
    let person = col(lineage.person.clone());
    let mut cells_aggr: Vec<Expr> = values.iter().map(|v| v.call.clone()).collect();
    cells_aggr.extend(persons_and_contributors(
        &person,
        needs.persons_up_to,
        &conditions,
    ));
    let cells = Aggregate::try_new(Arc::new(input), group_expr, cells_aggr).map_err(plan_fault)?;
    let group_columns = cells.group_expr_len().map_err(plan_fault)?;
    let grouping = grouping_info(&cells.group_expr, group_columns);
    let output_columns = group_columns + values.len();
    let persons = output_columns;
    let measures = measure_layouts(values, &positions, persons);
    Ok((
        LogicalPlan::Aggregate(cells),
        CellsLayout {
            output_columns,
            group_columns,
            grouping,
            measures,
            persons,
            dominance: Vec::new(),
            noisy: Vec::new(),
        },
    ))
}
