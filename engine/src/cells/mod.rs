//! The cells plan of a released aggregate: the user's aggregate, plus the
//! columns the release step needs to decide, cell by cell and value by
//! value, what may leave.
//!
//! Besides the user's values, each cell gets:
//!
//! - the number of distinct persons of the cell (rule 2), counted up to the
//!   threshold where an exact count is not needed
//!   ([`persons_up_to`](mod@crate::functions::persons_up_to));
//! - for each value that is not computed from every row of the cell (a
//!   FILTER, a NULL or zero argument, see [`measures::Value::contributing_rows`]),
//!   the number of persons who contribute to it: rule 2 read per value;
//! - for each sensitive sum, its total and largest per-person contributions,
//!   for the dominance rules (rule 6).
//!
//! Values that need persons' partial results (sums clamped per person, order
//! statistics over persons) are computed in several levels
//! (`per_person`), unless they are only clamped sums, which one aggregate
//! finds from each cell's runs of persons (`person_runs`); the others are
//! computed in one aggregate (`single_level`). In dp mode, every value is
//! computed from contributions bounded per person (`bounded`), for the
//! noise the release step adds.

mod bounded;
mod exprs;
mod layout;
pub mod measures;
mod per_person;
mod person_runs;
mod single_level;
pub mod step;

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::common::{Column, DFSchemaRef, TableReference};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection, TableScanBuilder};
use seuil_policies::Role;

use crate::error::{EngineError, plan_fault};
use crate::lineage::PersonLineage;
use crate::rules::margins::shape_of;
pub use layout::{Bounding, CellsLayout, CellsNeeds, DominanceColumns, MeasureLayout, NoisyValue};
pub use measures::{Measure, MeasureKind, OrderKind, Value};
pub use step::{ReleaseStep, ReleasedCells};

pub use crate::lineage::PERSONS_COLUMN;

/// Builds the cells plan of a released aggregate over `input`: resolves its
/// values ([`measures::resolve`]) and picks the plan they need.
pub fn cells_plan(
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    aggr_expr: Vec<Expr>,
    original_schema: &DFSchemaRef,
    lineage: &PersonLineage,
    role: &Role,
    needs: CellsNeeds,
) -> Result<(LogicalPlan, CellsLayout), EngineError> {
    let values = aggr_expr
        .iter()
        .map(|call| measures::resolve(call, lineage, role, input.schema()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(bounding) = &needs.bounding {
        return bounded::cells_plan(
            input,
            group_expr,
            &values,
            lineage,
            bounding,
            original_schema,
        );
    }
    if values.iter().any(Value::needs_persons) {
        if person_runs::serves(&values, &group_expr, &input, lineage) {
            return person_runs::cells_plan(
                input,
                group_expr,
                &values,
                lineage,
                needs,
                original_schema,
            );
        }
        per_person::PerPersonPlan::new(input, group_expr, &values, lineage, role, needs)?
            .build(original_schema)
    } else {
        single_level::cells_plan(input, group_expr, &values, lineage, needs)
    }
}

/// A released aggregate as the rewrite rebuilt it: its input (private rows
/// with their person column), its group and aggregate expressions.
#[derive(Debug)]
pub struct RewrittenAggregate {
    /// The rewritten input.
    pub input: LogicalPlan,
    /// The group expressions, named as in the user's aggregate.
    pub group_expr: Vec<Expr>,
    /// The aggregate calls, named as in the user's aggregate.
    pub aggr_expr: Vec<Expr>,
}

/// Builds the cells plan of the released aggregate `id` and the node that
/// replaces the aggregate in the rest of the plan: a projection of the
/// released cells with the aggregate's own column names and qualifiers.
/// `original` is the user's aggregate, before the rewrite.
pub fn release_aggregate(
    id: usize,
    rewritten: RewrittenAggregate,
    original: &Aggregate,
    lineage: &PersonLineage,
    role: &Role,
    needs: CellsNeeds,
) -> Result<(ReleaseStep, LogicalPlan), EngineError> {
    let original_schema: &DFSchemaRef = &original.schema;
    let RewrittenAggregate {
        input,
        group_expr,
        aggr_expr,
    } = rewritten;
    let (cells, layout) = cells_plan(
        input,
        group_expr,
        aggr_expr,
        original_schema,
        lineage,
        role,
        needs,
    )?;
    let additive: Vec<bool> = layout
        .measures
        .iter()
        .map(|m| m.kind.is_additive())
        .collect();
    let margins = shape_of(original, &additive);
    let cells_schema = Arc::clone(cells.schema());
    let fields: Vec<Field> = (0..layout.output_columns)
        .map(|i| {
            let field = cells_schema.field(i);
            Field::new(format!("c{i}"), field.data_type().clone(), true)
        })
        .collect();
    let released = Arc::new(ReleasedCells::new(Arc::new(Schema::new(fields))));
    let step = ReleaseStep {
        id,
        cells,
        layout,
        margins,
        released: Arc::clone(&released),
    };
    let name = TableReference::bare(step.table_name());
    let scan = TableScanBuilder::new(name.clone(), provider_as_source(released))
        .build()
        .map_err(plan_fault)?;
    let exprs: Vec<Expr> = (0..step.layout.output_columns)
        .map(|i| {
            let (qualifier, field) = cells_schema.qualified_field(i);
            Expr::Column(Column::new(Some(name.clone()), format!("c{i}")))
                .alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    let projection =
        Projection::try_new(exprs, Arc::new(LogicalPlan::TableScan(scan))).map_err(plan_fault)?;
    Ok((step, LogicalPlan::Projection(projection)))
}
