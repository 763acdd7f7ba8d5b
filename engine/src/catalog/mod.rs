//! The data: one Parquet file per table in a folder, opened as DataFusion
//! tables. These raw tables are only ever scanned by plans the privacy rewrite
//! built; user queries are planned against the scoped views of
//! [`crate::rules::scopes`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::ParquetReadOptions;
use seuil_policies::{ColumnType, DataSchema};

mod keyed;

use crate::error::EngineError;
pub use keyed::{IndexOpening, PersonIndex};

/// The raw tables of a data folder.
#[derive(Debug, Clone)]
pub struct DataCatalog {
    /// The folder the tables were read from.
    pub location: PathBuf,
    tables: BTreeMap<String, Arc<dyn TableProvider>>,
    /// The file of each table, for tables opened from files.
    files: BTreeMap<String, PathBuf>,
    /// The private tables keyed by person, when an index is attached.
    person_index: Option<Arc<PersonIndex>>,
    /// True for one data node's share of a deployment's tables (or a
    /// coordinator's view of some nodes): tables of the policy that are not
    /// here are held elsewhere.
    share: bool,
}

impl DataCatalog {
    /// Opens every `*.parquet` file of `dir` as a table named after the file.
    pub async fn open(
        dir: &Path,
        options: &crate::options::EngineOptions,
    ) -> Result<Self, EngineError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            EngineError::Setup(format!(
                "cannot read the data folder {}: {e}",
                dir.display()
            ))
        })?;
        let mut files = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| EngineError::Setup(format!("cannot list {}: {e}", dir.display())))?
                .path();
            if path.extension().is_some_and(|ext| ext == "parquet")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                files.insert(stem.to_string(), path);
            }
        }
        if files.is_empty() {
            return Err(EngineError::Setup(format!(
                "the data folder {} holds no .parquet table (generate one with `seuil gen --out {}`)",
                dir.display(),
                dir.display()
            )));
        }
        let ctx = crate::session::standalone_context(options);
        let mut tables = BTreeMap::new();
        for (name, path) in &files {
            let path_text = path.to_str().ok_or_else(|| {
                EngineError::Setup(format!("{} is not a UTF-8 path", path.display()))
            })?;
            ctx.register_parquet(name, path_text, ParquetReadOptions::default())
                .await
                .map_err(|e| {
                    EngineError::Setup(format!("cannot open {} as Parquet: {e}", path.display()))
                })?;
            let provider = ctx
                .table_provider(name.as_str())
                .await
                .map_err(|e| EngineError::Setup(format!("cannot open {}: {e}", path.display())))?;
            tables.insert(name.clone(), FileTable::wrap(path, provider));
        }
        Ok(Self {
            location: dir.to_path_buf(),
            tables,
            files,
            person_index: None,
            share: false,
        })
    }

    /// A catalog from tables already opened (tests, benchmarks).
    pub fn from_tables(
        location: PathBuf,
        tables: BTreeMap<String, Arc<dyn TableProvider>>,
    ) -> Self {
        Self {
            location,
            tables,
            files: BTreeMap::new(),
            person_index: None,
            share: false,
        }
    }

    /// The same tables, as a share of a deployment's tables: the policy's
    /// tables that are not here are held by other nodes.
    pub fn as_share(self) -> Self {
        Self {
            share: true,
            ..self
        }
    }

    /// Whether these tables are a share of a deployment's tables.
    pub fn is_share(&self) -> bool {
        self.share
    }

    /// The same tables with a person index attached: scans of private tables
    /// read their keyed copies instead of joining to the person.
    pub fn with_person_index(&self, index: PersonIndex) -> Self {
        Self {
            person_index: Some(Arc::new(index)),
            ..self.clone()
        }
    }

    /// The person index, if one is attached.
    pub fn person_index(&self) -> Option<&PersonIndex> {
        self.person_index.as_deref()
    }

    /// The file table `name` was opened from.
    pub fn file(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    /// The raw table `name`.
    pub fn table(&self, name: &str) -> Option<&Arc<dyn TableProvider>> {
        self.tables.get(name)
    }

    /// All raw tables by name.
    pub fn tables(&self) -> &BTreeMap<String, Arc<dyn TableProvider>> {
        &self.tables
    }

    /// The Arrow schema of table `name`.
    pub fn schema(&self, name: &str) -> Option<SchemaRef> {
        self.tables.get(name).map(|t| t.schema())
    }

    /// The data's shape as policy validation sees it.
    pub fn data_schema(&self) -> DataSchema {
        DataSchema {
            location: self.location.display().to_string(),
            share: self.share,
            tables: self
                .tables
                .iter()
                .map(|(name, table)| {
                    let columns = table
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), column_type(f.data_type())))
                        .collect();
                    (name.clone(), columns)
                })
                .collect(),
        }
    }
}

fn column_type(data_type: &DataType) -> ColumnType {
    match data_type {
        t if t.is_string() => ColumnType::Text,
        t if t.is_integer() => ColumnType::Integer,
        t if t.is_floating() || t.is_decimal() => ColumnType::Float,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => ColumnType::Temporal,
        DataType::Boolean => ColumnType::Boolean,
        other => ColumnType::Other(other.to_string()),
    }
}

/// A table read from one file that fails, rather than reads as empty, once
/// the file is gone: DataFusion's listing of a missing file is an empty
/// table, and a query over it would quietly suppress every cell. Happens when
/// the data or the person index is removed under a running engine.
#[derive(Debug)]
pub(crate) struct FileTable {
    file: PathBuf,
    inner: Arc<dyn TableProvider>,
}

impl FileTable {
    /// `inner`, the table of `file`, failing once `file` is gone.
    pub(crate) fn wrap(file: &Path, inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        Arc::new(FileTable {
            file: file.to_path_buf(),
            inner,
        })
    }

    fn check(&self) -> datafusion::error::Result<()> {
        if self.file.is_file() {
            return Ok(());
        }
        tracing::error!(
            file = %self.file.display(),
            "a table file is gone; restart the engine (a removed person index is rebuilt)"
        );
        Err(DataFusionError::IoError(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "a table file is gone",
        )))
    }
}

#[async_trait::async_trait]
impl TableProvider for FileTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.check()?;
        self.inner.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> datafusion::error::Result<ScanResult> {
        self.check()?;
        self.inner.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
}
