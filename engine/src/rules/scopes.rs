//! Rule 8, scopes.
//!
//! > A role sees only the tables and columns its project was approved for,
//! > with row filters (years, regions) applied under its queries. A column
//! > outside the scope does not exist for that role.
//!
//! Each role plans its queries in a catalog of its own, holding one
//! [`ScopedTable`] per approved table with only the approved columns. A table
//! or column outside the scope is therefore reported exactly as one that does
//! not exist, by DataFusion's own planner. A scoped table cannot be read: its
//! `scan` fails, so that a plan the privacy rewrite did not rebuild can never
//! run. The rewrite reads the raw table instead and applies the role's row
//! filters directly above the scan, under everything the user wrote.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, internal_err};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use seuil_policies::{Policy, Role};

use crate::catalog::DataCatalog;
use crate::error::EngineError;

/// A table as one role sees it: the approved columns only, never readable.
#[derive(Debug)]
pub struct ScopedTable {
    schema: SchemaRef,
}

impl ScopedTable {
    /// The view of `raw` restricted to `columns`, in the raw table's order.
    pub fn new(raw: &Schema, visible: impl Fn(&str) -> bool) -> Self {
        let fields: Vec<_> = raw
            .fields()
            .iter()
            .filter(|f| visible(f.name()))
            .cloned()
            .collect();
        Self {
            schema: Arc::new(Schema::new(fields)),
        }
    }
}

#[async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Reaching this means a plan escaped the privacy rewrite. Fail closed.
        internal_err!("a scoped table was scanned without the privacy rewrite")
    }
}

/// Registers the role's scoped tables in `ctx`.
pub fn register_scoped_tables(
    ctx: &SessionContext,
    policy: &Policy,
    role: &Role,
    data: &DataCatalog,
) -> Result<(), EngineError> {
    for (table, scope) in &role.tables {
        let Some(raw) = data.schema(table) else {
            // Held by another data node: queries here cannot name it.
            if data.is_share() {
                continue;
            }
            return Err(EngineError::Setup(format!(
                "role {} is given table {table}, which is not in the data",
                role.name
            )));
        };
        // A column is visible when the policy lists it and the role's scope includes it.
        let listed = policy.table(table).map(|t| &t.columns);
        let view = ScopedTable::new(&raw, |column| {
            scope.columns.contains(column) && listed.is_some_and(|l| l.contains_key(column))
        });
        ctx.register_table(table.as_str(), Arc::new(view))
            .map_err(|e| EngineError::Setup(format!("cannot register {table}: {e}")))?;
    }
    Ok(())
}

/// The role's row filters, parsed against each raw table's columns.
/// Column references are unqualified; [`requalify`](crate::lineage::requalify) ties them to a scan.
pub fn parse_row_filters(
    ctx: &SessionContext,
    role: &Role,
    data: &DataCatalog,
) -> Result<BTreeMap<String, Expr>, EngineError> {
    let mut filters = BTreeMap::new();
    for (table, scope) in &role.tables {
        let Some(sql) = &scope.row_filter else {
            continue;
        };
        let Some(raw) = data.schema(table) else {
            continue;
        };
        let schema = DFSchema::try_from(raw.as_ref().clone())
            .map_err(|e| EngineError::Setup(format!("schema of {table}: {e}")))?;
        let expr = ctx.parse_sql_expr(sql, &schema).map_err(|e| {
            EngineError::Setup(format!(
                "row_filter of role {} on {table} is not valid for the data: {e}",
                role.name
            ))
        })?;
        filters.insert(table.clone(), expr);
    }
    Ok(filters)
}
