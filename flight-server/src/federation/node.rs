//! `seuil node`: a data node. It serves the Parquet tables of its folder to
//! a coordinator over Arrow Flight ([`super::wire`]): its catalog, and the
//! cells plans it is sent, each checked again against the node's own copy
//! of the policy before it runs (`Engine::run_cells_plan`).
//!
//! The node writes its own hash-chained audit log: a line when a plan is
//! accepted or refused, and one when its stream ends (rows and bytes sent,
//! bytes scanned), each synced before the node goes on. With TLS, only a
//! client certificate from the configured CA whose SHA-256 fingerprint is
//! pinned (`[tls] client_fingerprints`) is answered.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt};
use prost::Message;
use seuil_engine::audit::{AuditRecord, Outcome};
use seuil_engine::{Engine, EngineError, NodeTraffic};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::wire::{CATALOG_ACTION, CellsTicket, StreamSummary};
use crate::config::ServerConfig;
use crate::server::audit::AuditLog;
use crate::server::{Serving, serve_flight, status, tls};

/// The name a node's audit lines give the node itself.
const THIS_NODE: &str = "this node";

/// Arguments of `seuil node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Where the data, policy and audit log are.
    #[command(flatten)]
    pub data: crate::cli::data::DataArgs,
    /// Address to listen on (default: the configuration's, or
    /// 127.0.0.1:50061 without one; port 0 picks a free port).
    #[arg(long, env = "SEUIL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve plaintext on an address that is not loopback (only behind
    /// another layer that encrypts the traffic).
    #[arg(long)]
    pub insecure: bool,
}

/// The port of a node started without `--listen` or a configuration.
pub const DEFAULT_PORT: u16 = 50061;

/// The first line `seuil node` prints once it listens, for scripts and
/// tests that wait for it.
pub const ANNOUNCE: &str = "seuil: data node serving Arrow Flight on ";

/// Runs `seuil node` until Ctrl-C.
pub async fn run(args: &NodeArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut config = args.data.config()?;
    match (args.listen, &args.data.config) {
        (Some(listen), _) => config.server.listen = listen,
        // Not the server's port: a node and a coordinator often share a host.
        (None, None) => config.server.listen = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
        (None, Some(_)) => {}
    }
    // A node serves its own folder: no demo data is generated for it.
    config.server.demo_persons = 0;
    tls::check_listen(config.server.listen, config.tls.is_some(), args.insecure)?;
    let engine = crate::cli::data::open_node_engine(&config).await?;
    let node = DataNode::new(engine, config).insecure(args.insecure);
    let running = node.start().await?;
    println!("{ANNOUNCE}{}", running.uri());
    tokio::signal::ctrl_c().await?;
    eprintln!("seuil: stopping");
    running.shutdown().await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// A data node, ready to start.
#[derive(Debug)]
pub struct DataNode {
    engine: Engine,
    config: ServerConfig,
    insecure: bool,
}

impl DataNode {
    /// A node serving `engine` (opened with `Engine::open_share`) with the
    /// settings of `config`.
    pub fn new(engine: Engine, config: ServerConfig) -> Self {
        Self {
            engine,
            config,
            insecure: false,
        }
    }

    /// Allows plaintext on an address that is not loopback.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Binds the address and serves in the background.
    pub async fn start(self) -> anyhow::Result<RunningNode> {
        let Self {
            engine,
            config,
            insecure,
        } = self;
        let listen = config.server.listen;
        tls::check_listen(listen, config.tls.is_some(), insecure)?;
        let pins = match &config.tls {
            Some(section) => {
                if section.client_ca.is_none() || section.client_fingerprints.is_empty() {
                    anyhow::bail!(
                        "a data node with TLS needs [tls] client_ca (the CA of the coordinator's certificate) and client_fingerprints (the SHA-256 fingerprint of the coordinator's certificate, which `seuil certs` prints)"
                    );
                }
                Some(
                    section
                        .client_fingerprints
                        .iter()
                        .map(|f| normalise_fingerprint(f))
                        .collect::<Vec<_>>(),
                )
            }
            None => None,
        };
        let tls_config = tls::server_tls(config.tls.as_ref())?;
        let audit = crate::cli::data::open_audit_log(&config)?;
        let catalog = serde_json::to_vec(&engine.node_catalog().await?)?;
        let service = NodeService {
            engine,
            audit,
            catalog: Arc::new(catalog),
            pins: pins.map(Arc::new),
            timeout: Duration::from_secs(config.limits.query_timeout_seconds),
        };
        let Serving {
            local_addr,
            shutdown,
            task,
        } = serve_flight(listen, tls_config, FlightServiceServer::new(service)).await?;
        tracing::info!(%local_addr, tls = config.tls.is_some(), "data node serving");
        Ok(RunningNode {
            local_addr,
            tls: config.tls.is_some(),
            shutdown: Some(shutdown),
            task,
        })
    }
}

/// A node serving in the background.
#[derive(Debug)]
pub struct RunningNode {
    local_addr: SocketAddr,
    tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningNode {
    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URI a coordinator reaches it at (`grpc://` or `grpc+tls://`).
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stops accepting calls, lets running ones finish, and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        self.task
            .await
            .map_err(|e| anyhow::anyhow!("the node task failed: {e}"))?
            .map_err(|e| anyhow::anyhow!("the node failed: {e}"))
    }
}

/// A fingerprint as `seuil certs` prints it, or with colons, in any case.
fn normalise_fingerprint(text: &str) -> String {
    text.trim()
        .trim_start_matches("sha256:")
        .replace(':', "")
        .to_ascii_lowercase()
}

/// The SHA-256 fingerprint of a DER certificate, as hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The line after `started`, of the same plan.
fn ended_line(started: &AuditRecord) -> AuditRecord {
    let mut ended = started.next(Outcome::Error);
    ended.plan_sha256.clone_from(&started.plan_sha256);
    ended
}

/// The Flight service of a node.
#[derive(Clone)]
struct NodeService {
    engine: Engine,
    audit: AuditLog,
    /// The catalog, as JSON: it does not change while the node runs.
    catalog: Arc<Vec<u8>>,
    /// With TLS, the fingerprints of the coordinators answered.
    pins: Option<Arc<Vec<String>>>,
    timeout: Duration,
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl NodeService {
    /// Who is calling, for the audit: the coordinator's certificate
    /// fingerprint, checked against the pins; `PermissionDenied` for any
    /// other certificate.
    #[allow(clippy::result_large_err)]
    fn caller<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let Some(pins) = &self.pins else {
            return Ok("coordinator (plaintext)".into());
        };
        let presented = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| fingerprint(c.as_ref())));
        match presented {
            Some(print) if pins.contains(&print) => Ok(format!("coordinator sha256:{print}")),
            _ => {
                tracing::warn!("a client whose certificate is not pinned was refused");
                Err(Status::permission_denied(
                    "this data node answers its coordinator only",
                ))
            }
        }
    }

    async fn audit(&self, record: AuditRecord) -> Result<(), Status> {
        self.audit
            .append_async(record)
            .await
            .map(drop)
            .map_err(|e| {
                tracing::error!(error = %e, "the node's audit log cannot be written");
                Status::internal("the data node cannot write its audit log")
            })
    }

    /// The node's answer to a plan it refused or could not start: audited,
    /// then the engine's error as a gRPC status.
    async fn refuse(&self, record: AuditRecord, error: EngineError) -> Status {
        let ended = record.failed(&error);
        tracing::info!(outcome = ?ended.outcome, message = ?ended.message, "cells plan not run");
        if let Err(status) = self.audit(ended).await {
            return status;
        }
        status::from_engine(&error)
    }

    async fn cells(
        &self,
        caller: String,
        ticket: CellsTicket,
    ) -> Result<BoxedStream<FlightData>, Status> {
        let mut started = AuditRecord::new(&caller, "coordinator", "cells plan", Outcome::Started);
        started.query_id = Some(ticket.query_id.clone());
        started.plan_sha256 = Some(hex::encode(Sha256::digest(&ticket.plan)));
        let run = match self.engine.run_cells_plan(&ticket.plan).await {
            Ok(run) => run,
            Err(error) => return Err(self.refuse(ended_line(&started), error).await),
        };
        self.audit(started.clone()).await?;
        let (sender, receiver) = mpsc::channel::<Result<FlightData, Status>>(2);
        let service = self.clone();
        let timeout = self.timeout;
        // The plan runs in a task of its own that stops when the coordinator
        // goes away: a closed channel drops the stream, which stops the scans.
        let seuil_engine::CellsPlanRun { stream, metrics } = run;
        tokio::spawn(async move {
            let schema = stream.schema();
            let rows = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&rows);
            let batches = stream.map(move |batch| {
                batch
                    .inspect(|b| {
                        counted.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    })
                    .map_err(|e| FlightError::Tonic(Box::new(status::from_stream(&e))))
            });
            let mut encoded = FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(batches);
            let mut bytes = 0u64;
            let outcome = tokio::time::timeout(timeout, async {
                while let Some(data) = encoded.next().await {
                    match data {
                        Ok(data) => {
                            bytes += (data.data_header.len() + data.data_body.len()) as u64;
                            if sender.send(Ok(data)).await.is_err() {
                                return Err("the coordinator went away");
                            }
                        }
                        Err(error) => {
                            sender.send(Err(status::from_flight(error))).await.ok();
                            return Err("the plan failed while running");
                        }
                    }
                }
                Ok(())
            })
            .await
            .unwrap_or(Err("the plan ran out of time"));
            drop(encoded);
            let summary = StreamSummary {
                rows: rows.load(Ordering::Relaxed),
                bytes,
                bytes_scanned: metrics.bytes_scanned(),
            };
            let mut ended = ended_line(&started);
            ended.nodes = vec![NodeTraffic {
                node: THIS_NODE.into(),
                plans: 1,
                rows: summary.rows,
                bytes: summary.bytes,
                bytes_scanned: summary.bytes_scanned,
            }];
            match outcome {
                Ok(()) => {
                    ended.outcome = Outcome::Ok;
                    if let Err(status) = service.audit(ended).await {
                        sender.send(Err(status)).await.ok();
                        return;
                    }
                    let summary = serde_json::to_vec(&summary).unwrap_or_default();
                    let last = FlightData::new().with_app_metadata(summary);
                    sender.send(Ok(last)).await.ok();
                }
                Err(why) => {
                    ended.outcome = Outcome::Error;
                    ended.message = Some(why.into());
                    service.audit(ended).await.ok();
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

fn not_served(what: &str) -> Status {
    Status::unimplemented(format!(
        "a data node answers its catalog and cells plans only, not {what}"
    ))
}

#[tonic::async_trait]
impl FlightService for NodeService {
    type HandshakeStream = BoxedStream<HandshakeResponse>;
    type ListFlightsStream = BoxedStream<FlightInfo>;
    type DoGetStream = BoxedStream<FlightData>;
    type DoPutStream = BoxedStream<PutResult>;
    type DoActionStream = BoxedStream<arrow_flight::Result>;
    type ListActionsStream = BoxedStream<ActionType>;
    type DoExchangeStream = BoxedStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(not_served(
            "handshakes (the node authenticates its coordinator by its certificate)",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(not_served("flight listings"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(not_served("flight descriptors"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(not_served("flight descriptors"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(not_served("flight descriptors"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let ticket = CellsTicket::decode(request.into_inner().ticket)
            .map_err(|_| Status::invalid_argument("the ticket is not a cells plan"))?;
        Ok(Response::new(self.cells(caller, ticket).await?))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(not_served("writes"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(not_served("exchanges"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.caller(&request)?;
        if request.get_ref().r#type != CATALOG_ACTION {
            return Err(not_served("this action"));
        }
        let answer = arrow_flight::Result {
            body: self.catalog.as_ref().clone().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(answer)]))))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.caller(&request)?;
        let catalog = ActionType {
            r#type: CATALOG_ACTION.into(),
            description: "the node's tables, their schemas and its person index's lineage (JSON)"
                .into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(
            catalog,
        )]))))
    }
}
