//! How a query is rewritten, for `seuil policy explain`: the rewritten query
//! as SQL (through DataFusion's unparser) where it can be, the plan, and the
//! rules that acted.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection, col, lit};
use datafusion::sql::unparser::plan_to_sql;
use seuil_policies::Role;

use crate::error::{EngineError, plan_fault};
use crate::lineage::PERSONS_COLUMN;
use crate::release::DpRelease;
use crate::rewrite::RewrittenQuery;

/// A rewritten query, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The rewritten query as one SQL statement: each released aggregate is a
    /// `WITH __seuil_cells_N` whose `WHERE` applies the person threshold.
    /// `None` when the unparser cannot express a part of the plan.
    pub sql: Option<String>,
    /// The rewritten plans, as DataFusion prints them.
    pub plan: String,
    /// What each rule did, in words.
    pub rules: Vec<String>,
    /// In dp mode: what the query would cost and how its noise is set, in
    /// words, and what the user has left before it runs.
    pub cost: Vec<String>,
}

/// A dp query's cost and noise, in words, for `explain`.
pub fn describe_cost(dp: &DpRelease, left: Option<f64>) -> Vec<String> {
    let mut lines = vec![format!(
        "costs epsilon {} and delta {:e}: epsilon split evenly over {} noisy releases ({} each), all of delta to the choice of cells",
        dp.epsilon, dp.delta, dp.releases, dp.epsilon_per_release
    )];
    if let Some(left) = left {
        lines.push(format!("you have epsilon {left} left before this query"));
    }
    lines.push(format!(
        "each person counts in at most {} cells of an aggregate, with at most {} rows in each",
        dp.max_groups_per_person, dp.max_rows_per_cell
    ));
    for selection in &dp.selections {
        lines.push(format!(
            "__seuil_cells_{}: a cell is released when its person count less {}, plus discrete Laplace noise of scale {}, reaches {} (delta {:e})",
            selection.aggregate, selection.pre_threshold, selection.scale, selection.threshold, selection.delta
        ));
    }
    for value in &dp.values {
        let ci = value
            .ci95
            .map(|ci| format!(", 95% of the noise within ±{ci}"))
            .unwrap_or_default();
        lines.push(format!(
            "{}: {} noise of scale {}{ci}",
            value.name, value.mechanism, value.scale
        ));
    }
    lines
}

/// The threshold of the release step as a filter, so that the whole rewrite
/// reads as SQL. (The release step itself runs on the computed cells.)
fn release_as_plan(
    cells: &LogicalPlan,
    outputs: usize,
    role: &Role,
) -> Result<LogicalPlan, EngineError> {
    let threshold = col(Column::from_name(PERSONS_COLUMN)).gt_eq(lit(i64::from(role.min_persons)));
    let filtered = Filter::try_new(threshold, Arc::new(cells.clone())).map_err(plan_fault)?;
    let schema = Arc::clone(cells.schema());
    let exprs: Vec<Expr> = (0..outputs)
        .map(|i| {
            let (qualifier, field) = schema.qualified_field(i);
            Expr::Column(Column::new(qualifier.cloned(), field.name())).alias(format!("c{i}"))
        })
        .collect();
    Ok(LogicalPlan::Projection(
        Projection::try_new(exprs, Arc::new(LogicalPlan::Filter(filtered))).map_err(plan_fault)?,
    ))
}

/// Explains a rewritten query.
pub fn explain(
    rewritten: &RewrittenQuery,
    role: &Role,
    cost: Vec<String>,
) -> Result<Explanation, EngineError> {
    let mut plan_text = String::new();
    let mut ctes = Vec::new();
    let mut sql_ok = true;
    for step in &rewritten.releases {
        let released = release_as_plan(&step.cells, step.layout.output_columns, role)?;
        plan_text.push_str(&format!(
            "{} (released cells, threshold {} persons):\n{}\n\n",
            step.table_name(),
            role.min_persons,
            released.display_indent()
        ));
        match plan_to_sql(&released) {
            Ok(sql) => ctes.push(format!("{} AS ({sql})", step.table_name())),
            Err(_) => sql_ok = false,
        }
    }
    plan_text.push_str(&format!("result:\n{}", rewritten.plan.display_indent()));
    let sql = match plan_to_sql(&rewritten.plan) {
        Ok(outer) if sql_ok => Some(if ctes.is_empty() {
            outer.to_string()
        } else {
            format!("WITH {} {outer}", ctes.join(", "))
        }),
        _ => None,
    };
    Ok(Explanation {
        sql,
        plan: plan_text,
        rules: rewritten.notes.iter().map(ToString::to_string).collect(),
        cost,
    })
}
