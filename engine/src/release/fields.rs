//! Which output columns of a dp query are noisy values as released, and
//! their field metadata (`seuil.dp.mechanism`, `seuil.dp.scale`,
//! `seuil.dp.ci95`): what a client reads beside each number.
//!
//! A column is a noisy value when the rest of the plan passes a released
//! value on unchanged (through projections, filters, sorts and limits,
//! under any name). A value computed further from noisy values is
//! post-processing: still private, but without an interval of its own.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::report::{NoisyField, ReleaseReport};
use crate::cells::ReleaseStep;
use crate::cells::step::CELLS_TABLE_PREFIX;

/// The dp metadata of each output column of `plan` (reading the cells of
/// `releases`) that is a noisy value as released (through projections,
/// filters, sorts and limits, under any name): a value computed further
/// from noisy values has no interval of its own, and gets none.
pub fn noisy_fields(
    plan: &LogicalPlan,
    releases: &[ReleaseStep],
    report: &ReleaseReport,
) -> Vec<Option<HashMap<String, String>>> {
    let Some(dp) = &report.dp else {
        return Vec::new();
    };
    released_values(plan, releases)
        .into_iter()
        .map(|source| {
            let (aggregate, value) = source?;
            dp.values
                .iter()
                .find(|v| v.aggregate == aggregate && v.value == value)
                .map(NoisyField::metadata)
        })
        .collect()
}

/// Names each noisy value of a dp report after the output column that
/// releases it as it is, when one does: what the client reads.
pub fn name_noisy_values(report: &mut ReleaseReport, plan: &LogicalPlan, releases: &[ReleaseStep]) {
    let Some(dp) = &mut report.dp else {
        return;
    };
    let schema = plan.schema();
    for (index, source) in released_values(plan, releases).into_iter().enumerate() {
        if let Some((aggregate, value)) = source
            && let Some(noisy) = dp
                .values
                .iter_mut()
                .find(|v| v.aggregate == aggregate && v.value == value)
        {
            noisy.name = schema.field(index).name().clone();
        }
    }
}

/// For each output column of `plan`, the released aggregate of `releases`
/// and the value it passes on unchanged, if any.
fn released_values(plan: &LogicalPlan, releases: &[ReleaseStep]) -> Vec<Option<(usize, usize)>> {
    (0..plan.schema().fields().len())
        .map(|index| {
            let (aggregate, column) = released_source(plan, index)?;
            let step = releases.iter().find(|s| s.id == aggregate)?;
            Some((aggregate, column.checked_sub(step.layout.group_columns)?))
        })
        .collect()
}

/// Which released aggregate's cells column the output column `index` of
/// `plan` passes on unchanged, if any.
fn released_source(plan: &LogicalPlan, index: usize) -> Option<(usize, usize)> {
    match plan {
        LogicalPlan::Projection(projection) => {
            let mut expr = projection.expr.get(index)?;
            while let Expr::Alias(alias) = expr {
                expr = &alias.expr;
            }
            let Expr::Column(column) = expr else {
                return None;
            };
            if let Some(table) = &column.relation
                && let Some(id) = table.table().strip_prefix(CELLS_TABLE_PREFIX)
            {
                let id = id.parse().ok()?;
                let position = column.name.strip_prefix('c')?.parse().ok()?;
                return Some((id, position));
            }
            let input_index = projection.input.schema().index_of_column(column).ok()?;
            released_source(&projection.input, input_index)
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_) => released_source(plan.inputs().first()?, index),
        _ => None,
    }
}

/// `schema` with `metadata[i]` on its field `i`.
pub fn with_field_metadata(
    schema: Schema,
    metadata: &[Option<HashMap<String, String>>],
) -> SchemaRef {
    if metadata.iter().all(Option::is_none) {
        return Arc::new(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| match metadata.get(i).cloned().flatten() {
            Some(extra) => {
                let mut own = field.metadata().clone();
                own.extend(extra);
                field.as_ref().clone().with_metadata(own)
            }
            None => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}
