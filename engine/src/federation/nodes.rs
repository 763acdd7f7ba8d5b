//! The coordinator's view of its data nodes: what each node says it holds
//! ([`NodeCatalog`]), tables that stand for a node's tables in planning
//! ([`RemoteTable`]), and the node each cells plan runs on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::plan_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use seuil_policies::{DataSchema, Policy, TableKind};

use crate::catalog::{DataCatalog, IndexOpening, PersonIndex};
use crate::error::EngineError;
use crate::release::NodeTraffic;

/// One table a node holds, as it describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeTable {
    /// The data table's name.
    pub name: String,
    /// True for its keyed copy in the node's person index.
    pub keyed: bool,
    /// Its Arrow schema, as an Arrow IPC stream of no batches.
    pub schema: Vec<u8>,
    /// For a public table of the node's policy (a code list), its rows, as
    /// an Arrow IPC stream: the coordinator joins public tables itself
    /// and sends a node only the plans that need its private tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_rows: Option<Vec<u8>>,
}

/// What a node answers to a catalog request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeCatalog {
    /// The digest of the policy's person paths its person index was built
    /// for, if it has one.
    pub lineage: Option<String>,
    /// Its tables and keyed copies.
    pub tables: Vec<NodeTable>,
}

fn schema_bytes(schema: &Schema) -> Result<Vec<u8>, EngineError> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, schema)
        .map_err(|e| EngineError::internal(format!("writing a schema: {e}")))?;
    writer
        .finish()
        .map_err(|e| EngineError::internal(format!("writing a schema: {e}")))?;
    drop(writer);
    Ok(bytes)
}

/// The most bytes of public rows a node sends in its catalog; a larger
/// public table stays on the node, and only plans sent there read it.
pub const MAX_PUBLIC_ROWS_BYTES: usize = 8 << 20;

fn batches_bytes(schema: &Schema, batches: &[RecordBatch]) -> Result<Vec<u8>, EngineError> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, schema)
        .map_err(|e| EngineError::internal(format!("writing public rows: {e}")))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|e| EngineError::internal(format!("writing public rows: {e}")))?;
    }
    writer
        .finish()
        .map_err(|e| EngineError::internal(format!("writing public rows: {e}")))?;
    drop(writer);
    Ok(bytes)
}

fn batches_from_bytes(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), EngineError> {
    let unreadable = || EngineError::Setup("a data node sent public rows unreadably".into());
    let reader =
        StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|_| unreadable())?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unreadable())?;
    Ok((schema, batches))
}

fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef, EngineError> {
    StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map(|reader| reader.schema())
        .map_err(|_| EngineError::Setup("a data node described a table unreadably".into()))
}

impl NodeCatalog {
    /// What a node over `data` holds: schemas only.
    pub fn of(data: &DataCatalog) -> Result<Self, EngineError> {
        let mut tables = Vec::new();
        for (name, table) in data.tables() {
            tables.push(NodeTable {
                name: name.clone(),
                keyed: false,
                schema: schema_bytes(&table.schema())?,
                public_rows: None,
            });
        }
        if let Some(index) = data.person_index() {
            for (name, table) in &index.tables {
                tables.push(NodeTable {
                    name: name.clone(),
                    keyed: true,
                    schema: schema_bytes(&table.schema())?,
                    public_rows: None,
                });
            }
        }
        Ok(Self {
            lineage: data.person_index().map(|i| i.lineage.clone()),
            tables,
        })
    }
}

impl NodeCatalog {
    /// [`NodeCatalog::of`], with the rows of the tables `policy` calls
    /// public, read in `ctx`, up to [`MAX_PUBLIC_ROWS_BYTES`] in all.
    pub async fn with_public_rows(
        data: &DataCatalog,
        policy: &Policy,
        ctx: &datafusion::prelude::SessionContext,
    ) -> Result<Self, EngineError> {
        let mut catalog = Self::of(data)?;
        let mut total = 0usize;
        for table in catalog.tables.iter_mut().filter(|t| !t.keyed) {
            let public = policy
                .table(&table.name)
                .is_some_and(|t| t.kind == TableKind::Public);
            let Some(provider) = data.tables().get(&table.name).filter(|_| public) else {
                continue;
            };
            let batches = ctx
                .read_table(Arc::clone(provider))
                .map_err(|e| {
                    EngineError::Setup(format!("reading public table {}: {e}", table.name))
                })?
                .collect()
                .await
                .map_err(|e| {
                    EngineError::Setup(format!("reading public table {}: {e}", table.name))
                })?;
            let bytes = batches_bytes(&provider.schema(), &batches)?;
            total += bytes.len();
            if total > MAX_PUBLIC_ROWS_BYTES {
                tracing::warn!(table = %table.name, "public table too large to send with the catalog; it is read on the node only");
                continue;
            }
            table.public_rows = Some(bytes);
        }
        Ok(catalog)
    }
}

/// A table of a data node, in the coordinator's catalog: planning reads its
/// schema; only its node can scan it.
#[derive(Debug)]
pub struct RemoteTable {
    node: String,
    schema: SchemaRef,
}

impl RemoteTable {
    /// The node that holds the table.
    pub fn node(&self) -> &str {
        &self.node
    }
}

#[async_trait]
impl TableProvider for RemoteTable {
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
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan_err!("this table is read on data node {}", self.node)
    }
}

/// Where the coordinator's tables are held, for a message.
const THIS_COORDINATOR: &str = "this coordinator";

/// What the policy of a coordinator is validated against: its local tables
/// (if any) and its nodes'. Tables several hold are checked by
/// [`coordinator_catalog`], once the policy says which are public.
pub fn coordinator_data_schema(
    local: Option<&DataCatalog>,
    nodes: &[(String, NodeCatalog)],
) -> Result<DataSchema, EngineError> {
    Ok(merge(local, nodes, &|_| true)?.data_schema())
}

/// The coordinator's catalog over its local tables (if any, with their
/// person index) and its nodes': each table is read where it is held,
/// keyed copies included. Public code lists may be held by several (any
/// copy serves, the local one first); a private table two hold (a table
/// split by rows) is for a later version and refused here.
pub fn coordinator_catalog(
    local: Option<&DataCatalog>,
    nodes: &[(String, NodeCatalog)],
    policy: &Policy,
) -> Result<DataCatalog, EngineError> {
    merge(local, nodes, &|table| {
        policy
            .table(table)
            .is_some_and(|t| t.kind == TableKind::Public)
    })
}

fn merge(
    local: Option<&DataCatalog>,
    nodes: &[(String, NodeCatalog)],
    is_public: &dyn Fn(&str) -> bool,
) -> Result<DataCatalog, EngineError> {
    let mut tables: BTreeMap<String, Arc<dyn TableProvider>> = BTreeMap::new();
    let mut keyed: BTreeMap<String, Arc<dyn TableProvider>> = BTreeMap::new();
    let mut holders: BTreeMap<String, String> = BTreeMap::new();
    let mut lineages: Vec<(String, String)> = Vec::new();
    let mut hold = |table: &str, holder: &str| -> Result<bool, EngineError> {
        match holders.get(table) {
            None => {
                holders.insert(table.to_string(), holder.to_string());
                Ok(true)
            }
            Some(_) if is_public(table) => Ok(false),
            Some(other) => Err(EngineError::Setup(format!(
                "{other} and {holder} both hold table {table}; private tables split across data nodes are not served yet"
            ))),
        }
    };
    if let Some(local) = local {
        for (name, provider) in local.tables() {
            hold(name, THIS_COORDINATOR)?;
            tables.insert(name.clone(), Arc::clone(provider));
        }
        if let Some(index) = local.person_index() {
            keyed.extend(index.tables.iter().map(|(n, t)| (n.clone(), Arc::clone(t))));
            lineages.push((THIS_COORDINATOR.to_string(), index.lineage.clone()));
        }
    }
    for (node, catalog) in nodes {
        let holder = format!("data node {node}");
        for table in &catalog.tables {
            let provider: Arc<dyn TableProvider> = match &table.public_rows {
                // A public code list: the coordinator holds its rows.
                Some(rows) => {
                    let (schema, batches) = batches_from_bytes(rows)?;
                    Arc::new(
                        datafusion::datasource::MemTable::try_new(schema, vec![batches]).map_err(
                            |_| {
                                EngineError::Setup("a data node sent public rows unreadably".into())
                            },
                        )?,
                    )
                }
                None => Arc::new(RemoteTable {
                    node: node.clone(),
                    schema: schema_from_bytes(&table.schema)?,
                }),
            };
            if table.keyed {
                // A keyed copy comes with its raw table, checked below.
                keyed.entry(table.name.clone()).or_insert(provider);
            } else if hold(&table.name, &holder)? {
                tables.insert(table.name.clone(), provider);
            }
        }
        if let Some(digest) = &catalog.lineage {
            lineages.push((holder, digest.clone()));
        }
    }
    if let Some((first, lineage)) = lineages.first()
        && let Some((other, _)) = lineages.iter().find(|(_, l)| l != lineage)
    {
        return Err(EngineError::Setup(format!(
            "the person indexes of {first} and {other} were built for other person paths"
        )));
    }
    let node_names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    let location = PathBuf::from(match local {
        Some(local) => format!(
            "{}+nodes:{}",
            local.location.display(),
            node_names.join(",")
        ),
        None => format!("nodes:{}", node_names.join(",")),
    });
    let data = DataCatalog::from_tables(location.clone(), tables).as_share();
    let local_index = local.and_then(|l| l.person_index());
    Ok(match lineages.into_iter().next() {
        Some((_, lineage)) if !keyed.is_empty() => data.with_person_index(PersonIndex {
            folder: local_index.map_or(location, |index| index.folder.clone()),
            lineage,
            tables: keyed,
            opening: local_index.map_or(IndexOpening::Reused, |index| index.opening.clone()),
        }),
        _ => data,
    })
}

fn is_public_table(data: &DataCatalog, policy: &Policy, provider: &Arc<dyn TableProvider>) -> bool {
    super::codec::identify(data, provider).is_some_and(|identity| {
        !identity.keyed
            && policy
                .table(&identity.table)
                .is_some_and(|t| t.kind == TableKind::Public)
    })
}

/// The node a cells plan runs on: `None` when it reads local tables only,
/// the node's name when it reads one node's tables (and public code lists,
/// which every node may hold), an error naming the nodes when it needs
/// private tables of several.
pub fn node_of(
    plan: &LogicalPlan,
    data: &DataCatalog,
    policy: &Policy,
) -> Result<Option<String>, EngineError> {
    let mut private_nodes: Vec<String> = Vec::new();
    let mut any_nodes: Vec<String> = Vec::new();
    let mut local = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
        {
            match provider.downcast_ref::<RemoteTable>() {
                Some(remote) => {
                    let public = is_public_table(data, policy, &provider);
                    let list = if public {
                        &mut any_nodes
                    } else {
                        &mut private_nodes
                    };
                    if !list.contains(&remote.node) {
                        list.push(remote.node.clone());
                    }
                }
                // A public table the coordinator holds joins anywhere.
                None if is_public_table(data, policy, &provider) => {}
                None => local = true,
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|_| EngineError::internal("reading a cells plan's tables"))?;
    match (private_nodes.as_slice(), local) {
        ([], false) => Ok(any_nodes.first().cloned()),
        ([], true) => Ok(None),
        ([node], false) => Ok(Some(node.clone())),
        (nodes, _) => {
            let mut names: Vec<String> = nodes.to_vec();
            if local {
                names.push(THIS_COORDINATOR.into());
            }
            Err(EngineError::InvalidQuery(format!(
                "the query needs private tables of {}: a query over several data nodes' persons is not served yet",
                names.join(" and ")
            )))
        }
    }
}

/// The cells a data node sent back for one plan, and what moved.
#[derive(Debug, Clone)]
pub struct NodeCells {
    /// The cells.
    pub batches: Vec<RecordBatch>,
    /// Rows and bytes received, bytes scanned on the node.
    pub traffic: NodeTraffic,
}

/// Runs cells plans on data nodes: the server's Flight client.
#[async_trait]
pub trait CellsRunner: Send + Sync + std::fmt::Debug {
    /// Runs `plan` (encoded by [`super::encode_cells_plan`]) on `node` for
    /// query `query_id`, and returns its cells, at most `max_cells` rows
    /// of them (beyond, the limit's error, before more is received). A
    /// query stopped (timeout, client gone) drops this future: dropping it
    /// must stop the node's work too.
    async fn run(
        &self,
        node: &str,
        query_id: &str,
        plan: Vec<u8>,
        max_cells: usize,
    ) -> Result<NodeCells, EngineError>;
}
