//! Federation's cost: each query of the queries suite through a coordinator
//! over two data nodes (`cnam` and `hospitals`, the folders of `seuil gen
//! --layout federated`, served by `DataNode`s of this process on loopback
//! Arrow Flight) against one engine over the same files, measured in one
//! run; with what crossed from the nodes (rows and bytes of cells) and what
//! their scans read, so that "only cells cross" shows in numbers.

use std::path::{Path, PathBuf};

use seuil_engine::{Engine, EngineOptions, User};
use seuil_flight_server::config::{NodeEntry, ServerConfig};
use seuil_flight_server::federation::coordinator::open_coordinator;
use seuil_flight_server::federation::node::{DataNode, RunningNode};
use seuil_policies::PolicySource;

use super::queries::{QUERIES, best};
use super::time_query;
use crate::report::{Measurement, Report, median};

/// Arguments of the federation suite.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Folder of the federated layout; generated with `--persons` when it
    /// holds none.
    #[arg(long, default_value = "data/bench-federated")]
    pub data: PathBuf,
    /// Persons to generate when the folder is empty.
    #[arg(long, default_value_t = 1_000_000)]
    pub persons: u64,
    /// Timed runs per query and side (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Generates the federated layout unless it is there, and a `whole/`
/// folder of hard links to the same files for the single engine.
fn ensure_layout(data: &Path, persons: u64) -> anyhow::Result<PathBuf> {
    if !data.join("cnam").join("ref_dpt.parquet").exists() {
        eprintln!(
            "generating {persons} persons into {} (federated)",
            data.display()
        );
        let config = seuil_synth::GenConfig {
            persons,
            seed: 1,
            out_dir: data.to_path_buf(),
        };
        seuil_synth::generate_federated(&config, &|_| {})?;
    }
    let whole = data.join("whole");
    std::fs::create_dir_all(&whole)?;
    for (node, tables) in seuil_synth::FEDERATED_NODES {
        for table in tables.iter().chain(seuil_synth::PUBLIC_TABLES.iter()) {
            let file = format!("{table}.parquet");
            let target = whole.join(&file);
            if !target.exists() {
                std::fs::hard_link(data.join(node).join(&file), &target)?;
            }
        }
    }
    Ok(whole)
}

fn node_config(data: &Path, folder: &Path, name: &str) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::load(None)?;
    config.server.listen = "127.0.0.1:0".parse()?;
    config.server.data = folder.to_path_buf();
    config.server.demo_persons = 0;
    config.server.audit_log = Some(data.join(format!("{name}.audit.jsonl")));
    config.server.audit_key_file = Some(data.join("bench.audit.key"));
    Ok(config)
}

async fn start_node(data: &Path, name: &str) -> anyhow::Result<RunningNode> {
    let config = node_config(data, &data.join(name), name)?;
    let engine = seuil_flight_server::cli::data::open_node_engine(&config).await?;
    DataNode::new(engine, config).start().await
}

/// Runs the suite.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let whole_dir = ensure_layout(&args.data, args.persons)?;
    let policy = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let (single, _) = Engine::open_files(&policy, &whole_dir, EngineOptions::default()).await?;
    let cnam = start_node(&args.data, "cnam").await?;
    let hospitals = start_node(&args.data, "hospitals").await?;
    let mut config = node_config(&args.data, &whole_dir, "coordinator")?;
    config.nodes = vec![
        NodeEntry {
            name: "cnam".into(),
            url: cnam.uri(),
        },
        NodeEntry {
            name: "hospitals".into(),
            url: hospitals.uri(),
        },
    ];
    let coordinator = open_coordinator(&config, None).await?;
    let user = User::new("bench", "researcher");
    let mut measurements = Vec::new();
    let mut ratios = Vec::new();
    let mut across = Vec::new();
    for query in QUERIES {
        time_query(&single, &user, query.sql).await?;
        if let Err(error) = time_query(&coordinator, &user, query.sql).await {
            // Person joins across nodes are for a later version.
            across.push(format!("{} ({error})", query.name));
            continue;
        }
        let (mut single_times, mut federated_times) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..args.runs {
            single_times.push(time_query(&single, &user, query.sql).await?.ms);
            let run = time_query(&coordinator, &user, query.sql).await?;
            federated_times.push(run.ms);
            last = Some(run);
        }
        let (single_ms, federated_ms) = (best(&single_times), best(&federated_times));
        let ratio = federated_ms / single_ms;
        ratios.push(ratio);
        let traffic = last.map(|run| run.nodes).unwrap_or_default();
        let sum =
            |f: fn(&seuil_engine::NodeTraffic) -> u64| traffic.iter().map(f).sum::<u64>() as f64;
        measurements.push(Measurement {
            name: query.name.to_string(),
            values: vec![
                ("single_ms".into(), single_ms),
                ("federated_ms".into(), federated_ms),
                ("rows_received".into(), sum(|t| t.rows)),
                ("bytes_received".into(), sum(|t| t.bytes)),
                ("bytes_scanned_on_nodes".into(), sum(|t| t.bytes_scanned)),
            ],
            ratio: Some(ratio),
            ratios: Vec::new(),
        });
    }
    cnam.shutdown().await?;
    hospitals.shutdown().await?;
    let mut summary = vec![(
        "median federated / single".into(),
        format!("{:.2}", median(&mut ratios)),
    )];
    if !across.is_empty() {
        summary.push((
            "not served (private tables of both nodes)".into(),
            across.join("; "),
        ));
    }
    Ok(Report {
        suite: "federation".into(),
        setup: vec![
            ("data".into(), args.data.display().to_string()),
            (
                "nodes".into(),
                "cnam and hospitals in this process, over loopback Arrow Flight (plaintext)".into(),
            ),
            (
                "runs per query and side".into(),
                format!("{} (best of), after a warm-up", args.runs),
            ),
        ],
        measurements,
        summary,
    })
}
