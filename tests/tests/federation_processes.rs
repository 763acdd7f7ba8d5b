//! A local federation of real processes (DESIGN.md §3): the `seuil` binary
//! as two data nodes (`cnam` and `hospitals`, on the folders `seuil gen
//! --layout federated` writes) and as their coordinator, each on a free
//! port, waited for by the line it prints once it listens.
//!
//! Every query of the sqllogictest files and of the property grammar gives
//! the coordinator's client the cells and report an engine over the whole
//! data folder gives, or, for a query over both nodes' persons, a refusal
//! naming them. Everything the cnam node sends passes through a recording
//! proxy, and no identifier of the data appears in it. A node killed before
//! or during a query gives `Unavailable`, nothing released, an audit line
//! that says so, and the coordinator keeps answering from the other node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod server_common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use server_common::{Running, audit_lines, code, login, node, query, serve};
use seuil_engine::{Engine, User};
use seuil_tests::{SLT_PERSONS, SLT_SEED, grammar, open_engine, slt, test_data};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};

/// Users of the coordinator, one per role the tests use (password `demo`).
const USERS: [(&str, &str); 3] = [
    ("alice", "researcher"),
    ("rita", "regional"),
    ("bob", "public"),
];

fn demo_hash() -> String {
    seuil_flight_server::config::ServerConfig::load(None)
        .unwrap()
        .users["alice"]
        .password_hash
        .clone()
}

/// Writes a configuration file: `[server]` on a free loopback port with
/// `data`, its own audit log and key, and `extra` after it.
fn config_file(dir: &Path, name: &str, data: Option<&Path>, extra: &str) -> PathBuf {
    let data = data.map_or(String::new(), |d| format!("data = \"{}\"\n", d.display()));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{data}audit_log = \"{audit}\"\naudit_key_file = \"{key}\"\ndemo_persons = 0\n\n{extra}",
        audit = dir.join(format!("{name}.audit.jsonl")).display(),
        key = dir.join(format!("{name}.audit.key")).display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The users and nodes of a coordinator's configuration.
fn coordinator_extra(nodes: &[(&str, &str)]) -> String {
    let hash = demo_hash();
    let mut text = String::new();
    for (user, role) in USERS {
        text.push_str(&format!(
            "[users.{user}]\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n\n"
        ));
    }
    for (name, url) in nodes {
        text.push_str(&format!(
            "[[nodes]]\nname = \"{name}\"\nurl = \"{url}\"\n\n"
        ));
    }
    text
}

/// A process the proxy kills when the next request passes.
type Armed = Arc<Mutex<Option<Arc<Mutex<Running>>>>>;

/// A TCP proxy that forwards to `target` and records every byte sent back;
/// armed with a process, it kills it right after forwarding the next bytes
/// sent to `target` (a node dying while it runs a query).
struct RecordingProxy {
    address: String,
    received: Arc<Mutex<Vec<u8>>>,
    armed: Armed,
}

async fn recording_proxy(target: String) -> RecordingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&received);
    let armed: Armed = Arc::new(Mutex::new(None));
    let trigger = Arc::clone(&armed);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut upstream) = TcpStream::connect(&target).await else {
                continue;
            };
            let record = Arc::clone(&record);
            let trigger = Arc::clone(&trigger);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.split();
                let (mut upstream_read, mut upstream_write) = upstream.split();
                let up = async {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let n = client_read.read(&mut buffer).await?;
                        if n == 0 {
                            return Ok::<(), std::io::Error>(());
                        }
                        upstream_write.write_all(&buffer[..n]).await?;
                        let victim = trigger.lock().unwrap().take();
                        if let Some(victim) = victim {
                            let mut running = victim.lock().unwrap();
                            running.0.kill().ok();
                            running.0.wait().ok();
                        }
                    }
                };
                let down = async {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let n = upstream_read.read(&mut buffer).await?;
                        if n == 0 {
                            return Ok::<(), std::io::Error>(());
                        }
                        record.lock().unwrap().extend_from_slice(&buffer[..n]);
                        client_write.write_all(&buffer[..n]).await?;
                    }
                };
                let _ = tokio::join!(up, down);
            });
        }
    });
    RecordingProxy {
        address,
        received,
        armed,
    }
}

/// The federation: nodes, coordinator, and the whole data folder.
struct Federation {
    _dir: tempfile::TempDir,
    whole: Engine,
    whole_dir: seuil_tests::TestData,
    cnam: Arc<Mutex<Running>>,
    hospitals: Running,
    coordinator: Running,
    coordinator_uri: String,
    coordinator_audit: PathBuf,
    proxy: RecordingProxy,
}

async fn federation() -> Federation {
    let dir = tempfile::tempdir().unwrap();
    let folders = dir.path().join("federated");
    seuil_synth::generate_federated(
        &seuil_synth::GenConfig {
            persons: SLT_PERSONS,
            seed: SLT_SEED,
            out_dir: folders.clone(),
        },
        &|_| {},
    )
    .unwrap();
    let whole_dir = test_data(SLT_PERSONS, SLT_SEED);
    let whole = open_engine(whole_dir.path()).await;
    let cnam_config = config_file(dir.path(), "cnam", Some(&folders.join("cnam")), "");
    let hospitals_config = config_file(
        dir.path(),
        "hospitals",
        Some(&folders.join("hospitals")),
        "",
    );
    let (cnam, cnam_uri) = node(&cnam_config);
    let (hospitals, hospitals_uri) = node(&hospitals_config);
    let proxy = recording_proxy(cnam_uri.strip_prefix("grpc://").unwrap().to_string()).await;
    let proxied = format!("grpc://{}", proxy.address);
    let coordinator_config = config_file(
        dir.path(),
        "coordinator",
        None,
        &coordinator_extra(&[("cnam", &proxied), ("hospitals", &hospitals_uri)]),
    );
    let (coordinator, coordinator_uri) = serve(&coordinator_config);
    Federation {
        coordinator_audit: dir.path().join("coordinator.audit.jsonl"),
        _dir: dir,
        whole,
        whole_dir,
        cnam: Arc::new(Mutex::new(cnam)),
        hospitals,
        coordinator,
        coordinator_uri,
        proxy,
    }
}

async fn channel(uri: &str) -> Channel {
    let address = uri.strip_prefix("grpc://").expect("a plaintext URI");
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A result as both sides are compared: sorted rows, and the `seuil.*`
/// metadata the client sees (but which nodes served).
#[derive(Debug, PartialEq)]
struct Answer {
    rows: Vec<Vec<String>>,
    metadata: BTreeMap<String, String>,
}

fn answer(batches: &[RecordBatch], metadata: &std::collections::HashMap<String, String>) -> Answer {
    let mut rows = slt::rows(batches).unwrap();
    rows.sort();
    Answer {
        rows,
        metadata: metadata
            .iter()
            .filter(|(k, _)| k.as_str() != "seuil.nodes")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// What the whole-data engine answers: the answer and its report's
/// released and suppressed cell counts, or the error's text.
async fn whole_answer(
    engine: &Engine,
    role: &str,
    sql: &str,
) -> Result<(Answer, (u64, u64)), String> {
    let user = User::new("whole", role);
    let result = engine.query(&user, sql).await.map_err(|e| e.to_string())?;
    let metadata = result.report.metadata();
    let counts = (result.report.cells_released, result.report.cells_suppressed);
    let batches: Vec<RecordBatch> = result
        .stream
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((answer(&batches, &metadata), counts))
}

/// Compares one query; returns whether it was served by the coordinator
/// (and so has an `ok` line in its audit log).
async fn compare(
    federation: &Federation,
    clients: &mut BTreeMap<String, FlightSqlServiceClient<Channel>>,
    role: &str,
    sql: &str,
    expected_counts: &mut Vec<(u64, u64)>,
    tally: &mut Tally,
) {
    let expected = whole_answer(&federation.whole, role, sql).await;
    let client = clients.get_mut(role).expect("a user of the role");
    let got = query(client, sql).await;
    match (expected, got) {
        (Ok((expected, counts)), Ok(batches)) => {
            let metadata = batches
                .first()
                .map(|b| b.schema().metadata().clone())
                .unwrap_or_default();
            if batches.is_empty() {
                // No batch, no schema to read: the rows must be none too.
                assert!(
                    expected.rows.is_empty(),
                    "{sql}: no rows from the coordinator"
                );
            } else {
                assert_eq!(answer(&batches, &metadata), expected, "{sql}");
            }
            expected_counts.push(counts);
            tally.same += 1;
        }
        (Err(_), Err(error)) => {
            assert!(
                matches!(
                    code(&error),
                    tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                        | tonic::Code::ResourceExhausted
                ),
                "{sql}: {error}"
            );
            tally.refused_both += 1;
        }
        (Ok(_), Err(error)) => {
            let text = error.to_string();
            assert!(
                text.contains("private tables of")
                    && text.contains("cnam")
                    && text.contains("hospitals"),
                "{sql}: the coordinator failed where one engine answers: {text}"
            );
            tally.across_nodes += 1;
        }
        (Err(expected), Ok(_)) => {
            panic!("{sql}: the coordinator answered where one engine refuses: {expected}")
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    same: usize,
    refused_both: usize,
    across_nodes: usize,
}

/// The queries of the sqllogictest files that run on the shipped policy,
/// with the role each runs under.
fn slt_queries() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    let mut queries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.starts_with("# fixture:") {
            continue;
        }
        let records = sqllogictest::parse::<sqllogictest::DefaultColumnType>(&text).unwrap();
        let mut role = "researcher".to_string();
        for record in records {
            let sql = match record {
                sqllogictest::Record::Statement { sql, .. }
                | sqllogictest::Record::Query { sql, .. } => sql,
                _ => continue,
            };
            let trimmed = sql.trim();
            if let Some(next) = trimmed.strip_prefix("AS ROLE ") {
                role = next.trim().to_string();
            } else if !trimmed.starts_with("SHOW ") {
                queries.push((role.clone(), sql));
            }
        }
    }
    queries
}

/// Every identifier of the data, as text.
async fn identifiers(engine: &Engine) -> HashSet<String> {
    let raw = seuil_tests::oracle::raw_context(engine);
    let sql = "SELECT ben_nir_psa FROM ir_ben_r UNION ALL SELECT ben_nir_ano FROM ir_ben_r \
               UNION ALL SELECT rsa_num FROM t_mco_c UNION ALL SELECT nir_ano_17 FROM t_mco_c";
    let mut ids = HashSet::new();
    for batch in seuil_tests::oracle::run_raw(&raw, sql).await {
        for value in batch.column(0).as_string::<i32>().iter().flatten() {
            ids.insert(value.to_string());
        }
    }
    ids
}

/// The identifiers found in `bytes`.
fn identifiers_in(bytes: &[u8], ids: &HashSet<String>) -> Vec<String> {
    let lengths: std::collections::BTreeSet<usize> = ids.iter().map(String::len).collect();
    let mut found = Vec::new();
    for length in lengths {
        for window in bytes.windows(length) {
            if let Ok(text) = std::str::from_utf8(window)
                && ids.contains(text)
            {
                found.push(text.to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_of_processes_releases_what_one_engine_releases() {
    let federation = federation().await;
    let channel = channel(&federation.coordinator_uri).await;
    let mut clients = BTreeMap::new();
    for (user, role) in USERS {
        clients.insert(role.to_string(), login(channel.clone(), user).await);
    }
    let mut counts = Vec::new();

    let mut slt_tally = Tally::default();
    let queries = slt_queries();
    assert!(queries.len() > 50, "{} slt queries", queries.len());
    for (role, sql) in &queries {
        compare(
            &federation,
            &mut clients,
            role,
            sql,
            &mut counts,
            &mut slt_tally,
        )
        .await;
    }
    println!("slt queries: {slt_tally:?}");
    assert!(slt_tally.same > queries.len() / 3, "{slt_tally:?}");

    let seed = std::env::var("SEUIL_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(13);
    let cases: usize = std::env::var("SEUIL_FEDERATED_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut property_tally = Tally::default();
    for _ in 0..cases {
        let generated = grammar::generate(&mut rng);
        compare(
            &federation,
            &mut clients,
            "researcher",
            &generated.sql,
            &mut counts,
            &mut property_tally,
        )
        .await;
    }
    println!("property queries (seed {seed}): {property_tally:?}");
    assert!(property_tally.same > cases / 3, "{property_tally:?}");

    // The suppressed cells, which only the audit log tells, match too.
    let served: Vec<(u64, u64)> = audit_lines(&federation.coordinator_audit)
        .iter()
        .filter(|line| line["outcome"] == "ok")
        .map(|line| {
            (
                line["cells_released"].as_u64().unwrap(),
                line["cells_suppressed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(served, counts);
    // And each names what came from the nodes.
    let last = audit_lines(&federation.coordinator_audit)
        .into_iter()
        .rfind(|line| line["outcome"] == "ok")
        .unwrap();
    assert!(last["nodes"][0]["rows"].as_u64().is_some(), "{last}");

    let ids = identifiers(&federation.whole).await;
    let received = federation.proxy.received.lock().unwrap().clone();
    assert!(
        received.len() > 10_000,
        "the proxy saw {} bytes",
        received.len()
    );
    let leaked = identifiers_in(&received, &ids);
    assert!(
        leaked.is_empty(),
        "identifiers sent by the node: {:?}",
        &leaked[..leaked.len().min(5)]
    );
    drop(federation.whole_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_gives_unavailable_and_the_coordinator_goes_on() {
    let mut federation = federation().await;
    let channel = channel(&federation.coordinator_uri).await;
    let mut alice = login(channel, "alice").await;
    let on_cnam = "SELECT ben_sex_cod, count(*) FROM ir_ben_r GROUP BY 1";
    let expected = query(&mut alice, on_cnam).await.unwrap();

    // The hospitals node dies: the cnam node's queries are served still.
    federation.hospitals.0.kill().unwrap();
    federation.hospitals.0.wait().unwrap();
    assert_eq!(query(&mut alice, on_cnam).await.unwrap(), expected);

    // The cnam node dies while it runs a query: Unavailable, nothing
    // released, and the audit line says so.
    *federation.proxy.armed.lock().unwrap() = Some(Arc::clone(&federation.cnam));
    let by_drug = "SELECT pha_atc_cla, sum(pha_act_qsn) FROM er_pha_f GROUP BY 1";
    let during = query(&mut alice, by_drug).await.unwrap_err();
    assert!(
        federation.proxy.armed.lock().unwrap().is_none(),
        "the node was not killed"
    );
    assert_eq!(code(&during), tonic::Code::Unavailable, "{during}");
    assert!(
        during
            .to_string()
            .contains("data node cnam stopped answering; nothing was released"),
        "{during}"
    );
    let last = audit_lines(&federation.coordinator_audit).pop().unwrap();
    assert_eq!(last["outcome"], "error", "{last}");
    assert_eq!(last["error"], "unavailable", "{last}");
    assert_eq!(last["cells_released"], 0, "{last}");

    // Down before the query: the same.
    let before = query(&mut alice, on_cnam).await.unwrap_err();
    assert_eq!(code(&before), tonic::Code::Unavailable, "{before}");

    // The coordinator stays up: what needs no node is answered.
    let codes = query(&mut alice, "SELECT count(*) FROM ref_cim10")
        .await
        .unwrap();
    assert_eq!(codes[0].num_rows(), 1);
    let refused = query(&mut alice, "SELECT * FROM er_prs_f")
        .await
        .unwrap_err();
    assert_eq!(code(&refused), tonic::Code::PermissionDenied);
    drop(federation.coordinator);
}

#[tokio::test]
async fn a_coordinator_waits_for_a_node_that_is_not_up_yet() {
    let dir = tempfile::tempdir().unwrap();
    let folders = dir.path().join("federated");
    seuil_synth::generate_federated(
        &seuil_synth::GenConfig {
            persons: 300,
            seed: 3,
            out_dir: folders.clone(),
        },
        &|_| {},
    )
    .unwrap();
    // A port that nothing listens on yet: the node starts there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let coordinator_config = config_file(
        dir.path(),
        "coordinator",
        None,
        &coordinator_extra(&[("cnam", &format!("grpc://127.0.0.1:{port}"))]),
    );
    let args = [
        "serve".as_ref(),
        "--config".as_ref(),
        coordinator_config.as_os_str(),
    ];
    let mut child = std::process::Command::new(server_common::seuil_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says it is waiting for the node...
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let waiting = lines.next().unwrap().unwrap();
    assert!(
        waiting.contains("data node cnam") && waiting.contains("retrying"),
        "{waiting}"
    );
    // ...and serves once the node is up.
    let stdout = child.stdout.take().unwrap();
    let coordinator = Running(child);
    let node_config = config_file(dir.path(), "cnam", Some(&folders.join("cnam")), "");
    let text = std::fs::read_to_string(&node_config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&node_config, text).unwrap();
    let (_node, _) = node(&node_config);
    let announced = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("seuil: serving Flight SQL on ")
                .map(str::to_string)
        })
        .expect("the coordinator serves once its node answers");
    let mut alice = login(channel(&announced).await, "alice").await;
    assert!(
        query(
            &mut alice,
            "SELECT ben_sex_cod, count(*) FROM ir_ben_r GROUP BY 1"
        )
        .await
        .is_ok()
    );
    drop(coordinator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_serves_its_own_folder_next_to_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let folders = dir.path().join("federated");
    let (persons, seed) = (1_000, 9);
    seuil_synth::generate_federated(
        &seuil_synth::GenConfig {
            persons,
            seed,
            out_dir: folders.clone(),
        },
        &|_| {},
    )
    .unwrap();
    let whole_dir = test_data(persons, seed);
    let whole = open_engine(whole_dir.path()).await;
    let hospitals_config = config_file(
        dir.path(),
        "hospitals",
        Some(&folders.join("hospitals")),
        "",
    );
    let (_hospitals, hospitals_uri) = node(&hospitals_config);
    let coordinator_config = config_file(
        dir.path(),
        "coordinator",
        None,
        &coordinator_extra(&[("hospitals", &hospitals_uri)]),
    );
    // `seuil serve --data cnam/ --node hospitals=...`: the health
    // insurance's tables are read by the coordinator itself.
    let cnam = folders.join("cnam");
    let args = [
        "serve".as_ref(),
        "--config".as_ref(),
        coordinator_config.as_os_str(),
        "--data".as_ref(),
        cnam.as_os_str(),
    ];
    let (_coordinator, uri) = server_common::spawn_announcing(
        &args,
        "seuil: serving Flight SQL on ",
        std::process::Stdio::inherit(),
    );
    let mut alice = login(channel(&uri).await, "alice").await;
    for sql in [
        "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY 1",
        "SELECT pha_atc_cla, sum(pha_act_qsn) FROM er_pha_f GROUP BY 1",
    ] {
        let (expected, _) = whole_answer(&whole, "researcher", sql).await.unwrap();
        let batches = query(&mut alice, sql).await.unwrap();
        let metadata = batches[0].schema().metadata().clone();
        assert_eq!(answer(&batches, &metadata), expected, "{sql}");
        assert!(
            !metadata.contains_key("seuil.nodes"),
            "{sql}: no node took part: {metadata:?}"
        );
    }
    let stays = "SELECT substr(dgn_pal, 1, 1) AS chapter, count(*) FROM t_mco_b GROUP BY 1";
    let error = query(&mut alice, stays).await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::InvalidArgument, "{error}");
    assert!(
        error.to_string().contains("hospitals") && error.to_string().contains("this coordinator"),
        "{error}"
    );
}
