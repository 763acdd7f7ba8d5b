//! The Flight SQL server: what `seuil serve` runs, and what the end-to-end
//! tests start in-process.
//!
//! A request meets, in order: TLS ([`tls`]), the [`gateway`], which checks
//! the bearer token ([`auth`]), then the Flight SQL [`service`], which turns
//! it into engine calls under the [`limits`], writes the [`audit`] line, and
//! maps engine errors to gRPC codes in one place ([`status`]). Catalog
//! answers come from [`metadata`]; prepared statements live in
//! [`prepared`]; `?` parameters are numbered in [`params`]; the Flight
//! session actions are in `session`.
//!
//! ```no_run
//! # async fn demo(engine: seuil_engine::Engine) -> anyhow::Result<()> {
//! use seuil_flight_server::config::ServerConfig;
//! use seuil_flight_server::server::Server;
//!
//! let mut config = ServerConfig::load(None)?; // the demo configuration
//! config.server.listen = "127.0.0.1:0".parse()?; // any free port
//! let running = Server::new(engine, config).start().await?;
//! println!("listening on {}", running.local_addr());
//! running.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod auth;
pub mod gateway;
pub mod kept;
pub mod limits;
pub mod logins;
pub mod metadata;
pub mod params;
pub mod prepared;
pub mod serve;
pub mod service;
mod session;
pub mod status;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use seuil_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::config::ServerConfig;
use audit::AuditLog;
use auth::Authenticator;
use gateway::Gateway;
use service::SeuilFlightSql;

/// A server, ready to start.
#[derive(Debug)]
pub struct Server {
    engine: Engine,
    config: ServerConfig,
    insecure: bool,
}

impl Server {
    /// A server for `engine` with the settings of `config` (listen address,
    /// TLS, users, limits, audit log).
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

    /// Binds the address and starts serving in the background. The address
    /// may have port 0: [`RunningServer::local_addr`] tells the port bound.
    pub async fn start(self) -> anyhow::Result<RunningServer> {
        let Self {
            engine,
            config,
            insecure,
        } = self;
        let listen = config.server.listen;
        tls::check_listen(listen, config.tls.is_some(), insecure)?;
        let tls = tls::server_tls(config.tls.as_ref())?;
        let audit = crate::cli::data::open_audit_log(&config)?;
        tracing::info!(
            path = %config.server.audit_log_path().display(),
            head = %audit.head()?,
            "audit log opened"
        );
        let auth = Authenticator::new(
            config.users.clone(),
            Duration::from_secs(config.server.token_lifetime_seconds),
            config.limits.login_threads,
        )?;
        let service = SeuilFlightSql::new(engine, auth.clone(), audit.clone(), &config.limits)?;
        let Serving {
            local_addr,
            shutdown,
            task,
        } = serve_flight(
            listen,
            tls,
            FlightServiceServer::new(Gateway::new(service, auth)),
        )
        .await?;
        tracing::info!(%local_addr, tls = config.tls.is_some(), "serving Flight SQL");
        Ok(RunningServer {
            local_addr,
            tls: config.tls.is_some(),
            shutdown: Some(shutdown),
            task,
            audit,
        })
    }
}

/// A Flight service bound and serving in the background: what the server
/// and a data node (`crate::federation::node`) share.
pub(crate) struct Serving {
    /// The address bound.
    pub local_addr: SocketAddr,
    /// Stops accepting calls when sent to (or dropped).
    pub shutdown: oneshot::Sender<()>,
    /// The serving task.
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `listen` and serves `service` on it, over TLS when `tls` is set,
/// until [`Serving::shutdown`] fires.
pub(crate) async fn serve_flight<T: FlightService>(
    listen: SocketAddr,
    tls: Option<tonic::transport::ServerTlsConfig>,
    service: FlightServiceServer<T>,
) -> anyhow::Result<Serving> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let local_addr = listener.local_addr()?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| anyhow::anyhow!("invalid TLS configuration: {e}"))?;
    }
    // Small answers go out at once rather than waiting for more bytes.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (shutdown, stop) = oneshot::channel::<()>();
    let router = builder.add_service(service);
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                stop.await.ok();
            })
            .await
    });
    Ok(Serving {
        local_addr,
        shutdown,
        task,
    })
}

/// A server serving in the background.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    audit: AuditLog,
}

impl RunningServer {
    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether clients must use TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The URI clients connect to (`grpc://` or `grpc+tls://`).
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stops accepting calls, lets running ones finish, and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        self.join().await
    }

    async fn join(self) -> anyhow::Result<()> {
        let result = self.task.await;
        match self.audit.head() {
            Ok(head) => tracing::info!(%head, "server stopped; audit log head"),
            Err(error) => tracing::warn!(%error, "server stopped; audit log head unreadable"),
        }
        result
            .map_err(|e| anyhow::anyhow!("the server task failed: {e}"))?
            .map_err(|e| anyhow::anyhow!("the server failed: {e}"))
    }
}
