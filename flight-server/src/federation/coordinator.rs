//! The coordinator's side of federation: channels to the data nodes, what
//! each holds (learnt at start-up, waiting for nodes that do not answer
//! yet, and again when a node comes back), and the [`FlightCellsRunner`]
//! that runs cells plans on them.
//!
//! A node's error texts never reach the client (rule 5): the coordinator
//! answers by the kind of failure, naming the node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use seuil_engine::federation::nodes::{coordinator_catalog, coordinator_data_schema};
use seuil_engine::federation::{CellsRunner, NodeCatalog, NodeCells};
use seuil_engine::{DataCatalog, Engine, EngineError, NodeTraffic};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::wire::{CATALOG_ACTION, CellsTicket, StreamSummary};
use crate::config::{FederationSection, NodeEntry, ServerConfig};

/// One node: its name, its channel (which reconnects by itself), and what
/// it said it holds.
#[derive(Debug)]
struct Node {
    name: String,
    channel: Channel,
    catalog: NodeCatalog,
    /// Set when the node stopped answering: its catalog is asked again,
    /// and must not have changed, before it is sent another plan.
    lost: Mutex<bool>,
}

/// A channel to `entry`, over mutual TLS for `grpc+tls://` (the node's
/// certificate must be issued for its name), plaintext for `grpc://` on
/// loopback only. The channel connects lazily.
pub fn node_channel(entry: &NodeEntry, tls: &FederationSection) -> anyhow::Result<Channel> {
    let (secure, address) = if let Some(rest) = entry.url.strip_prefix("grpc+tls://") {
        (true, rest)
    } else if let Some(rest) = entry.url.strip_prefix("grpc://") {
        (false, rest)
    } else {
        anyhow::bail!(
            "data node {}: the URL {} should start with grpc+tls:// (or grpc:// on loopback)",
            entry.name,
            entry.url
        );
    };
    let scheme = if secure { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| anyhow::anyhow!("data node {}: invalid URL {}: {e}", entry.name, entry.url))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if secure {
        let read = |path: &Option<std::path::PathBuf>, what: &str| -> anyhow::Result<Vec<u8>> {
            let path = path.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "data node {} is reached over TLS: set [federation] {what} in the configuration",
                    entry.name
                )
            })?;
            std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&tls.node_ca, "node_ca")?))
            .identity(Identity::from_pem(
                read(&tls.cert, "cert")?,
                read(&tls.key, "key")?,
            ))
            .domain_name(entry.name.clone());
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| anyhow::anyhow!("data node {}: TLS: {e}", entry.name))?;
    } else {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            anyhow::bail!(
                "data node {} is reached in plaintext at {}, which is not loopback: cells would cross the network in clear; use grpc+tls:// with [federation] cert, key and node_ca",
                entry.name,
                entry.url
            );
        }
    }
    Ok(endpoint.connect_lazy())
}

/// Asks a node for its catalog.
async fn fetch_catalog(channel: &Channel) -> Result<NodeCatalog, tonic::Status> {
    // Public code lists come with the catalog: more than gRPC's default.
    let mut client = FlightServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let action = Action {
        r#type: CATALOG_ACTION.into(),
        body: Default::default(),
    };
    let answers: Vec<arrow_flight::Result> = client
        .do_action(action)
        .await?
        .into_inner()
        .try_collect()
        .await?;
    let body = answers
        .first()
        .ok_or_else(|| tonic::Status::internal("the node gave no catalog"))?;
    serde_json::from_slice(&body.body)
        .map_err(|_| tonic::Status::internal("the node's catalog is not readable"))
}

/// Learns what each node holds, waiting for nodes that do not answer yet
/// (reported on standard error, retried with a growing delay up to the
/// configured one).
async fn learn(config: &ServerConfig) -> anyhow::Result<Vec<Arc<Node>>> {
    let mut nodes = Vec::new();
    let longest = Duration::from_secs(config.federation.node_retry_seconds.max(1));
    for entry in &config.nodes {
        if nodes.iter().any(|n: &Arc<Node>| n.name == entry.name) {
            anyhow::bail!("data node {} is configured twice", entry.name);
        }
        let channel = node_channel(entry, &config.federation)?;
        let mut delay = Duration::from_millis(100);
        let catalog = loop {
            match fetch_catalog(&channel).await {
                Ok(catalog) => break catalog,
                Err(status) if status.code() == Code::PermissionDenied => anyhow::bail!(
                    "data node {} refused this coordinator: is its certificate's fingerprint pinned on the node?",
                    entry.name
                ),
                Err(status) => {
                    eprintln!(
                        "seuil: data node {} at {} does not answer ({}); retrying in {:.1} s",
                        entry.name,
                        entry.url,
                        status.code().description(),
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(longest);
                }
            }
        };
        tracing::info!(node = %entry.name, tables = catalog.tables.len(), "data node answered");
        nodes.push(Arc::new(Node {
            name: entry.name.clone(),
            channel,
            catalog,
            lost: Mutex::new(false),
        }));
    }
    Ok(nodes)
}

/// The coordinator's engine over the configured nodes' tables and, with
/// `local`, the Parquet tables of that folder (with their person index,
/// built here): the policy is checked against what all of them hold, cells
/// plans of the nodes' tables go to the nodes, those of local tables run
/// here.
pub async fn open_coordinator(
    config: &ServerConfig,
    local: Option<&std::path::Path>,
) -> anyhow::Result<Engine> {
    let options = crate::cli::data::coordinator_options(config)?;
    // Local tables are opened first: a wrong folder is reported before
    // waiting for nodes.
    let local = match local {
        Some(dir) => Some(DataCatalog::open(dir, &options).await?.as_share()),
        None => None,
    };
    let nodes = learn(config).await?;
    let catalogs: Vec<(String, NodeCatalog)> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.catalog.clone()))
        .collect();
    let source = crate::cli::data::policy_source(config.server.policy.as_deref())?;
    let schema = coordinator_data_schema(local.as_ref(), &catalogs)?;
    let (policy, warnings) =
        seuil_policies::load(&source, Some(&schema)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let local = match local {
        Some(local) => Some(seuil_engine::person_index::attach(&policy, local, &options).await),
        None => None,
    };
    let data = coordinator_catalog(local.as_ref(), &catalogs, &policy)?;
    let engine = Engine::new(policy, data, options)?;
    crate::cli::data::report_opening(config, &engine, &source, &warnings);
    config.check_roles(engine.policy())?;
    let runner = FlightCellsRunner {
        nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
    };
    Ok(engine
        .with_cells_runner(Arc::new(runner))
        .with_budget(crate::cli::data::open_budget_ledger(config)?))
}

/// Runs cells plans on data nodes over Arrow Flight.
#[derive(Debug)]
pub struct FlightCellsRunner {
    nodes: BTreeMap<String, Arc<Node>>,
}

/// How a failed call to a node reaches the client: by kind, naming the
/// node; what the node said goes to the coordinator's log only.
fn node_failure(node: &str, status: &tonic::Status) -> EngineError {
    tracing::warn!(node, code = ?status.code(), "a data node call failed");
    match status.code() {
        Code::ResourceExhausted => EngineError::Limit(format!(
            "data node {node} reached one of its limits while computing the cells; nothing was released"
        )),
        Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented => {
            EngineError::Setup(format!(
                "data node {node} refused a cells plan of this coordinator: its policy or tables may differ from the coordinator's"
            ))
        }
        Code::Internal => EngineError::Execution(format!(
            "data node {node} failed while computing the cells; nothing was released"
        )),
        _ => EngineError::Unavailable(node.to_string()),
    }
}

impl FlightCellsRunner {
    /// Checks that a node that stopped answering came back with the tables
    /// it had: the coordinator planned over those.
    async fn recheck(&self, node: &Node) -> Result<(), EngineError> {
        if !*node
            .lost
            .lock()
            .map_err(|_| EngineError::internal("node state"))?
        {
            return Ok(());
        }
        let catalog = fetch_catalog(&node.channel)
            .await
            .map_err(|status| node_failure(&node.name, &status))?;
        let same = serde_json::to_vec(&catalog).ok() == serde_json::to_vec(&node.catalog).ok();
        if !same {
            return Err(EngineError::Setup(format!(
                "data node {} came back holding other tables than at start-up; restart the coordinator to serve them",
                node.name
            )));
        }
        *node
            .lost
            .lock()
            .map_err(|_| EngineError::internal("node state"))? = false;
        tracing::info!(node = %node.name, "data node answers again");
        Ok(())
    }

    async fn fetch(
        &self,
        node: &Node,
        query_id: &str,
        plan: Vec<u8>,
        max_cells: usize,
    ) -> Result<NodeCells, EngineError> {
        let ticket = CellsTicket {
            query_id: query_id.to_string(),
            plan,
        };
        let mut client =
            FlightServiceClient::new(node.channel.clone()).max_decoding_message_size(64 << 20);
        let response = client
            .do_get(Ticket {
                ticket: ticket.encode_to_vec().into(),
            })
            .await
            .map_err(|status| node_failure(&node.name, &status))?;
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&bytes);
        // The summary the node sends last is no Arrow message: it is taken
        // out before decoding.
        let summary_slot: Arc<Mutex<Option<StreamSummary>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&summary_slot);
        let data = response.into_inner().filter_map(move |message| {
            let result = match message {
                Err(status) => Some(Err(FlightError::Tonic(Box::new(status)))),
                Ok(message) if message.data_header.is_empty() => {
                    if let Ok(summary) = serde_json::from_slice(&message.app_metadata)
                        && let Ok(mut slot) = slot.lock()
                    {
                        *slot = Some(summary);
                    }
                    None
                }
                Ok(message) => {
                    counted.fetch_add(
                        (message.data_header.len() + message.data_body.len()) as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    Some(Ok(message))
                }
            };
            std::future::ready(result)
        });
        let mut decoder = FlightDataDecoder::new(data);
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut rows = 0usize;
        while let Some(decoded) = decoder.next().await {
            let decoded = decoded.map_err(|error| match error {
                FlightError::Tonic(status) => node_failure(&node.name, &status),
                _ => EngineError::Execution(format!(
                    "data node {} sent cells that cannot be read; nothing was released",
                    node.name
                )),
            })?;
            match decoded.payload {
                DecodedPayload::RecordBatch(batch) => {
                    rows += batch.num_rows();
                    if rows > max_cells {
                        // Dropping the stream stops the node's work.
                        return Err(EngineError::too_many_cells(max_cells));
                    }
                    batches.push(batch);
                }
                DecodedPayload::None | DecodedPayload::Schema(_) => {}
            }
        }
        // A stream cut short (the node died) ends without the summary the
        // node sends last: the cells may be incomplete.
        drop(decoder);
        let summary = summary_slot
            .lock()
            .ok()
            .and_then(|slot| *slot)
            .ok_or_else(|| EngineError::Unavailable(node.name.clone()))?;
        if summary.rows != rows as u64 {
            return Err(EngineError::Execution(format!(
                "data node {} sent other cells than it counted; nothing was released",
                node.name
            )));
        }
        Ok(NodeCells {
            batches,
            traffic: NodeTraffic {
                node: node.name.clone(),
                plans: 1,
                rows: rows as u64,
                bytes: bytes.load(std::sync::atomic::Ordering::Relaxed),
                bytes_scanned: summary.bytes_scanned,
            },
        })
    }
}

#[async_trait]
impl CellsRunner for FlightCellsRunner {
    async fn run(
        &self,
        node: &str,
        query_id: &str,
        plan: Vec<u8>,
        max_cells: usize,
    ) -> Result<NodeCells, EngineError> {
        // A query dropped (client gone, timeout) drops this future, which
        // resets the stream: the node stops its work.
        let node = self
            .nodes
            .get(node)
            .ok_or_else(|| EngineError::internal("a cells plan for an unknown node"))?;
        self.recheck(node).await?;
        let result = self.fetch(node, query_id, plan, max_cells).await;
        if let Err(EngineError::Unavailable(_)) = &result
            && let Ok(mut lost) = node.lost.lock()
        {
            *lost = true;
        }
        result
    }
}
