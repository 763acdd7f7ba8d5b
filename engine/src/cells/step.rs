//! A released aggregate as the rest of the query sees it: its cells plan,
//! the layout of its columns, how it takes part in tables with margins, and
//! the table its released cells are read from once the release step has
//! run.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::internal_err;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use super::layout::CellsLayout;
use crate::error::EngineError;
use crate::rules::margins::MarginShape;

/// Cells that passed the release step, read by the rest of the plan.
#[derive(Debug)]
pub struct ReleasedCells {
    schema: SchemaRef,
    cells: OnceLock<Vec<RecordBatch>>,
}

impl ReleasedCells {
    pub(super) fn new(schema: SchemaRef) -> Self {
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

/// The prefix of released cells tables' names in rewritten plans, before
/// the released aggregate's id.
pub const CELLS_TABLE_PREFIX: &str = "__seuil_cells_";

impl ReleaseStep {
    /// The name of the released cells table in the rewritten plan.
    pub fn table_name(&self) -> String {
        format!("{CELLS_TABLE_PREFIX}{}", self.id)
    }
}
