//! Rule 2, persons, not rows, are counted.
//!
//! > Every released cell must cover at least `k` distinct persons (policy
//! > `min_persons`, default 11). Count persons through the person id, even
//! > when a query never mentions it, even after joins that repeat rows, and
//! > even when one person holds several source ids. `HAVING` in the user's
//! > query cannot lower the threshold. The rule holds per released value,
//! > not only per cell: each value is computed from at least `k` distinct
//! > persons who actually contribute a non-NULL input to it (after its
//! > `FILTER`, its `CASE`, the NULLs that `count(col)` skips); a value that
//! > fails is suppressed even when the rest of its cell is released.
//!
//! The released aggregate (an aggregate over private rows that is not per
//! person) gains columns that count, per cell, its distinct persons and the
//! persons who contribute to each value ([`crate::cells`];
//! [`crate::cells::measures::Value::contributing_rows`] says which rows
//! contribute). `COUNT(DISTINCT x)` of anything but a person key is refused:
//! it counts values, and a value may be held by a single person. Its cells
//! are computed first, where the data lives, and go through the release step
//! ([`crate::release`]) before anything the user wrote above the aggregate
//! (`HAVING`, `ORDER BY`, `LIMIT`, joins with code lists) sees them: in the
//! rest of the plan the aggregate is replaced by a scan of the released cells.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchemaRef;
use datafusion::common::{Column, TableReference, internal_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection, TableScanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use seuil_policies::Role;

use crate::cells::{self, CellsLayout};
use crate::error::{EngineError, plan_fault};
use crate::rewrite::lineage::PersonLineage;
use crate::rules::margins::{MarginShape, shape_of};

/// Cells that passed the release step, read by the rest of the plan.
#[derive(Debug)]
pub struct ReleasedCells {
    schema: SchemaRef,
    cells: OnceLock<Vec<RecordBatch>>,
}

impl ReleasedCells {
    fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            cells: OnceLock::new(),
        }
    }

    /// The schema of the released cells (positional names `c0`, `c1`, ...).
    pub fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }

    /// Stores the released cells. They can be set once.
    pub fn set(&self, batches: Vec<RecordBatch>) -> Result<(), EngineError> {
        self.cells
            .set(batches)
            .map_err(|_| EngineError::internal("released cells were set twice"))
    }
}

#[async_trait]
impl TableProvider for ReleasedCells {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(cells) = self.cells.get() else {
            // The release step has not run: fail closed rather than read nothing.
            return internal_err!("released cells were read before the release step");
        };
        let exec = MemorySourceConfig::try_new_exec(
            std::slice::from_ref(cells),
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// One released aggregate: the plan of its cells and where the released
/// cells go.
#[derive(Debug, Clone)]
pub struct ReleaseStep {
    /// Position of the step in the query, from 0.
    pub id: usize,
    /// The aggregate with its extra per-cell columns.
    pub cells: LogicalPlan,
    /// What the cells plan's columns are.
    pub layout: CellsLayout,
    /// How the aggregate takes part in tables with margins (rule 7).
    pub margins: MarginShape,
    /// Where the released cells are stored for the rest of the plan.
    pub released: Arc<ReleasedCells>,
}

impl ReleaseStep {
    /// The name of the released cells table in the rewritten plan.
    pub fn table_name(&self) -> String {
        format!("__seuil_cells_{}", self.id)
    }
}

/// Builds the cells plan of a released aggregate (see [`crate::cells`])
/// and the node that replaces the aggregate in the rest of the plan: a
/// projection of the released cells with the aggregate's own column names
/// and qualifiers. `original` is the user's aggregate, before the rewrite.
pub fn release_aggregate(
    id: usize,
    input: LogicalPlan,
    group_expr: Vec<Expr>,
    aggr_expr: Vec<Expr>,
    original: &Aggregate,
    lineage: &PersonLineage,
    role: &Role,
) -> Result<(ReleaseStep, LogicalPlan), EngineError> {
    let original_schema: &DFSchemaRef = &original.schema;
    let (cells, layout) =
        cells::cells_plan(input, group_expr, aggr_expr, original_schema, lineage, role)?;
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
