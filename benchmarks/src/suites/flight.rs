//! The protocol's cost: a small query through the Flight SQL server over
//! loopback against the same query through the engine in-process, measured
//! in one run. Latency (p50, p99) from one client, then throughput with 1, 8
//! and 32 concurrent clients; each reported as a ratio server / in-process.
//!
//! The server runs in this process on a free port, with everything it does
//! for a real client: TLS off (loopback), bearer-token checks, the query
//! slots, and the audit line synced to disk before each result.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use seuil_engine::{Engine, EngineOptions, User};
use seuil_flight_server::config::ServerConfig;
use seuil_flight_server::server::{RunningServer, Server};
use seuil_policies::PolicySource;
use tonic::transport::{Channel, Endpoint};

use crate::report::{Measurement, Report};

/// The small query: what a dashboard asks again and again.
pub const SMALL_QUERY: &str = "SELECT ben_sex_cod, count(*) FROM ir_ben_r GROUP BY ben_sex_cod";

/// Numbers of concurrent clients for throughput.
const CLIENTS: [usize; 3] = [1, 8, 32];

/// Arguments of the flight suite.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Data folder; generated with `--persons` when it holds no tables.
    #[arg(long, default_value = "data/bench-flight")]
    pub data: PathBuf,
    /// Persons to generate when the data folder is empty.
    #[arg(long, default_value_t = 100_000)]
    pub persons: u64,
    /// Timed runs for latency, per side (after a warm-up).
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Seconds of each throughput measurement, per side and client count.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// One way of running the small query.
#[derive(Clone)]
enum Side {
    InProcess(Engine),
    Flight(String),
}

/// A connection of one side.
enum Connection {
    /// The engine, and the phases of each query it ran (milliseconds:
    /// planning, cells, release rules, the rest of the plan's stream).
    InProcess(Engine, Vec<[f64; 4]>),
    Flight(Box<FlightSqlServiceClient<Channel>>),
}

impl Side {
    async fn connect(&self) -> anyhow::Result<Connection> {
        Ok(match self {
            Side::InProcess(engine) => Connection::InProcess(engine.clone(), Vec::new()),
            Side::Flight(address) => {
                let channel = Endpoint::from_shared(address.clone())?.connect().await?;
                let mut client = FlightSqlServiceClient::new(channel);
                client.handshake("alice", "demo").await?;
                Connection::Flight(Box::new(client))
            }
        })
    }
}

impl Connection {
    /// Runs the small query to its last batch; returns the rows.
    async fn run(&mut self) -> anyhow::Result<usize> {
        let batches = match self {
            Connection::InProcess(engine, phases) => {
                let started = Instant::now();
                let result = engine
                    .query(&User::new("alice", "researcher"), SMALL_QUERY)
                    .await?;
                let timings = result.timings;
                let streaming = Instant::now();
                let batches = result.stream.try_collect::<Vec<_>>().await?;
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                let accounted = timings.planning + timings.computing_cells + timings.release_rules;
                // What the three phases leave of the call: audit, the
                // release step's hand-offs, planning the rest of the plan.
                let other = ms(streaming.duration_since(started).saturating_sub(accounted))
                    + ms(streaming.elapsed());
                phases.push([
                    ms(timings.planning),
                    ms(timings.computing_cells),
                    ms(timings.release_rules),
                    other,
                ]);
                batches
            }
            Connection::Flight(client) => {
                let info = client.execute(SMALL_QUERY.to_string(), None).await?;
                let mut batches = Vec::new();
                for endpoint in info.endpoint {
                    let ticket = endpoint
                        .ticket
                        .ok_or_else(|| anyhow::anyhow!("an endpoint without a ticket"))?;
                    batches.extend(client.do_get(ticket).await?.try_collect::<Vec<_>>().await?);
                }
                batches
            }
        };
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }
}

/// The `q` quantile (0 to 1) of sorted values, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Latencies in milliseconds, sorted, and for the in-process side the
/// median of each phase of the timed runs.
async fn latencies(side: &Side, runs: usize) -> anyhow::Result<(Vec<f64>, Option<[f64; 4]>)> {
    let mut connection = side.connect().await?;
    for _ in 0..5 {
        connection.run().await?;
    }
    if let Connection::InProcess(_, phases) = &mut connection {
        phases.clear();
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        connection.run().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let phases = match &connection {
        Connection::InProcess(_, phases) => Some(std::array::from_fn(|i| {
            let mut column: Vec<f64> = phases.iter().map(|p| p[i]).collect();
            column.sort_by(f64::total_cmp);
            quantile(&column, 0.5)
        })),
        Connection::Flight(_) => None,
    };
    Ok((times, phases))
}

/// Queries per second with `clients` concurrent clients for `seconds`.
async fn throughput(side: &Side, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicUsize::new(0));
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(side.connect().await?);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(clients);
    for mut connection in connections {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                connection.run().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn start_server(
    engine: &Engine,
    args: &Args,
    audit: &std::path::Path,
) -> anyhow::Result<RunningServer> {
    let mut config = ServerConfig::load(None)?;
    config.server.listen = "127.0.0.1:0".parse()?;
    config.server.data = args.data.clone();
    config.server.audit_log = Some(audit.join("audit.jsonl"));
    config.server.audit_key_file = Some(audit.join("audit.key"));
    config.server.demo_persons = 0;
    config.limits.max_concurrent_queries_per_user = 64;
    Server::new(engine.clone(), config).start().await
}

/// Runs the suite.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    super::ensure_data(&args.data, args.persons)?;
    let policy = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let (engine, _) = Engine::open_files(&policy, &args.data, EngineOptions::default()).await?;
    let audit = tempfile::tempdir()?;
    let server = start_server(&engine, args, audit.path()).await?;
    let in_process = Side::InProcess(engine.clone());
    let flight = Side::Flight(format!("http://{}", server.local_addr()));

    let mut measurements = Vec::new();
    let (local, phases) = latencies(&in_process, args.runs).await?;
    let (remote, _) = latencies(&flight, args.runs).await?;
    let mut summary = Vec::new();
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (local_ms, remote_ms) = (quantile(&local, q), quantile(&remote, q));
        let ratio = remote_ms / local_ms;
        measurements.push(Measurement {
            name: format!("latency {label} (ms)"),
            values: vec![
                ("in_process_ms".into(), local_ms),
                ("flight_ms".into(), remote_ms),
            ],
            ratio: Some(ratio),
            ratios: Vec::new(),
        });
        summary.push((
            format!("latency {label} flight / in-process"),
            format!("{ratio:.2}"),
        ));
    }
    if let Some([planning, cells, release, other]) = phases {
        measurements.push(Measurement {
            name: "in-process phases p50 (ms)".into(),
            values: vec![
                ("planning_ms".into(), planning),
                ("cells_ms".into(), cells),
                ("release_ms".into(), release),
                ("other_ms".into(), other),
            ],
            ratio: None,
            ratios: Vec::new(),
        });
    }
    for clients in CLIENTS {
        let local_qps = throughput(&in_process, clients, args.seconds).await?;
        let remote_qps = throughput(&flight, clients, args.seconds).await?;
        let ratio = remote_qps / local_qps;
        let clients = if clients == 1 {
            "1 client".to_string()
        } else {
            format!("{clients} clients")
        };
        measurements.push(Measurement {
            name: format!("throughput, {clients} (queries/s)"),
            values: vec![
                ("in_process_qps".into(), local_qps),
                ("flight_qps".into(), remote_qps),
            ],
            ratio: Some(ratio),
            ratios: Vec::new(),
        });
        summary.push((
            format!("throughput with {clients} flight / in-process"),
            format!("{ratio:.2}"),
        ));
    }
    server.shutdown().await?;
    Ok(Report {
        suite: "flight".into(),
        setup: vec![
            ("data".into(), args.data.display().to_string()),
            ("query".into(), SMALL_QUERY.into()),
            (
                "latency runs per side".into(),
                format!("{} after 5 warm-up runs", args.runs),
            ),
            (
                "throughput seconds per measurement".into(),
                args.seconds.to_string(),
            ),
            (
                "cores".into(),
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .to_string(),
            ),
        ],
        measurements,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
