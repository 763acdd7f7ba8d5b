//! What the server end-to-end tests share: a configuration on fresh test
//! data, a server started in-process on a free port, and clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{FlightInfo, Ticket};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use seuil_flight_server::config::{ServerConfig, UserEntry};
use seuil_flight_server::server::{RunningServer, Server};
use seuil_tests::{SLT_PERSONS, SLT_SEED, TestData, test_data};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A query every test can run: persons by département and sex.
pub const BY_DEPARTEMENT: &str = "SELECT ben_res_dpt, ben_sex_cod, count(*) AS persons FROM ir_ben_r GROUP BY 1, 2 ORDER BY 1, 2";

/// Test data, a temporary folder for the audit log, and a configuration
/// pointing at both, with the demo users (passwords `demo`).
pub struct Fixture {
    pub data: TestData,
    pub dir: tempfile::TempDir,
    pub config: ServerConfig,
}

impl Fixture {
    pub fn new() -> Self {
        let data = test_data(SLT_PERSONS, SLT_SEED);
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut config = ServerConfig::load(None).expect("demo configuration");
        config.server.listen = "127.0.0.1:0".parse().expect("address");
        config.server.data = data.path().to_path_buf();
        config.server.audit_log = Some(dir.path().join("audit.jsonl"));
        config.server.audit_key_file = Some(dir.path().join("audit.key"));
        config.server.budget_ledger = Some(dir.path().join("budget.sqlite"));
        config.server.demo_persons = 0;
        // Two more users, password `demo` too: carol, another researcher,
        // and rita, of the regional role with its narrower scope.
        let hash = config.users["alice"].password_hash.clone();
        for (name, role) in [("carol", "researcher"), ("rita", "regional")] {
            config.users.insert(
                name.to_string(),
                UserEntry {
                    role: role.to_string(),
                    password_hash: hash.clone(),
                },
            );
        }
        Self { data, dir, config }
    }

    pub fn audit_log(&self) -> PathBuf {
        self.config.server.audit_log_path()
    }

    pub fn budget_ledger(&self) -> PathBuf {
        self.config.server.budget_ledger_path()
    }

    pub fn audit_key(&self) -> PathBuf {
        self.config.server.audit_key_path()
    }

    /// A configuration file for the `seuil` binary on this fixture's data
    /// and audit log, with users alice and carol (password `demo`) and
    /// `limits` as its `[limits]` section.
    pub fn config_file(&self, limits: &str) -> PathBuf {
        let hash = &self.config.users["alice"].password_hash;
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
data = "{data}"
audit_log = "{audit}"
audit_key_file = "{key}"
budget_ledger = "{ledger}"
demo_persons = 0

[limits]
{limits}

[users.alice]
role = "researcher"
password_hash = "{hash}"

[users.carol]
role = "researcher"
password_hash = "{hash}"

[users.bob]
role = "public"
password_hash = "{hash}"
"#,
            data = self.data.path().display(),
            audit = self.audit_log().display(),
            key = self.audit_key().display(),
            ledger = self.budget_ledger().display(),
        );
        let path = self.dir.path().join("seuil.toml");
        std::fs::write(&path, text).expect("writing the configuration");
        path
    }

    /// Starts the server in-process.
    pub async fn start(&self) -> RunningServer {
        start(self.config.clone()).await
    }
}

/// Starts a server on `config`.
pub async fn start(config: ServerConfig) -> RunningServer {
    let engine = seuil_flight_server::cli::data::open_engine(&config)
        .await
        .expect("opening the engine");
    Server::new(engine, config)
        .start()
        .await
        .expect("starting the server")
}

/// A plaintext channel to a server.
pub async fn channel(server: &RunningServer) -> Channel {
    Endpoint::from_shared(format!("http://{}", server.local_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connecting")
}

/// A TLS channel, trusting `ca`, presenting `identity` when given (mTLS).
pub async fn tls_channel(
    server: &RunningServer,
    ca: &str,
    identity: Option<tonic::transport::Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://localhost:{}", server.local_addr().port()))?
        .tls_config(tls)?
        .connect()
        .await
}

/// A Flight SQL client logged in as `user` (password `demo`).
pub async fn login(channel: Channel, user: &str) -> FlightSqlServiceClient<Channel> {
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake(user, "demo").await.expect("handshake");
    client
}

/// All batches of every endpoint of a `FlightInfo`.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        batches.extend(fetch_ticket(client, endpoint.ticket.expect("a ticket")).await?);
    }
    Ok(batches)
}

/// All batches of one ticket's `DoGet`.
pub async fn fetch_ticket(
    client: &mut FlightSqlServiceClient<Channel>,
    ticket: Ticket,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    client.do_get(ticket).await?.try_collect().await
}

/// Runs a query and collects its result.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

/// The gRPC code of a client error.
pub fn code(error: &arrow_flight::error::FlightError) -> tonic::Code {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => status.code(),
        other => panic!("not a gRPC status: {other:?}"),
    }
}

/// The result as text, to compare results.
pub fn pretty(batches: &[RecordBatch]) -> String {
    datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .expect("formatting")
        .to_string()
}

/// The lines of the audit log, parsed.
pub fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("reading the audit log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The `seuil` binary next to this test's build (`target/debug/seuil`).
pub fn seuil_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_path_buf();
    let binary = debug.join(format!("seuil{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p seuil-flight-server` (make test does)",
        binary.display()
    );
    binary
}

/// A child process killed when dropped, so that a failing test leaves no
/// server behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Starts `seuil serve` on `config` and returns it with the URI it printed.
pub fn serve(config: &Path) -> (Running, String) {
    serve_with(config, Stdio::inherit())
}

/// Starts `seuil serve` on `config`, its log going to `stderr`.
pub fn serve_with(config: &Path, stderr: Stdio) -> (Running, String) {
    let args = ["serve".as_ref(), "--config".as_ref(), config.as_os_str()];
    spawn_announcing(&args, "seuil: serving Flight SQL on ", stderr)
}

/// Starts `seuil node --config CONFIG` and returns it with its URI.
pub fn node(config: &Path) -> (Running, String) {
    let args = ["node".as_ref(), "--config".as_ref(), config.as_os_str()];
    spawn_announcing(
        &args,
        seuil_flight_server::federation::node::ANNOUNCE,
        Stdio::inherit(),
    )
}

/// Starts the `seuil` binary with `args` and waits for the line starting
/// with `announce` that it prints once it listens; returns the process and
/// the rest of that line (its URI).
pub fn spawn_announcing(
    args: &[&std::ffi::OsStr],
    announce: &'static str,
    stderr: Stdio,
) -> (Running, String) {
    let mut child = Command::new(seuil_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("starting seuil");
    let stdout = child.stdout.take().expect("stdout");
    let (found, wait) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(uri) = line.strip_prefix(announce) {
                found.send(uri.to_string()).ok();
            }
        }
    });
    let running = Running(child);
    let uri = wait
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("seuil {args:?} did not announce its address"));
    (running, uri)
}
