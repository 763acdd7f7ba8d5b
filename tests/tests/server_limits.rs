//! The real `seuil serve` process against requests built to stop it: huge
//! and deeply nested queries, a login flood, queries whose release work is
//! long, many clients of one user, a client that leaves mid-query, and a
//! `kill -9` mid-query. After each, the server is alive, answers a normal
//! query, and its log holds no panic; every accepted query has its audit
//! line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod server_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use server_common::{
    BY_DEPARTEMENT, Fixture, Running, audit_lines, code, login, query, serve_with, seuil_binary,
};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// The server process and where its log goes.
struct Server {
    process: Running,
    uri: String,
    log: PathBuf,
}

fn start(fixture: &Fixture, limits: &str) -> Server {
    let config = fixture.config_file(limits);
    let log = fixture.dir.path().join("server.log");
    let file = std::fs::File::create(&log).expect("log file");
    let (process, uri) = serve_with(&config, Stdio::from(file));
    Server { process, uri, log }
}

impl Server {
    async fn channel(&self) -> Channel {
        let address = self.uri.strip_prefix("grpc://").expect("a plaintext URI");
        Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connecting to seuil serve")
    }

    async fn client(&self, user: &str) -> FlightSqlServiceClient<Channel> {
        login(self.channel().await, user).await
    }

    /// The resident memory of the process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.0.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Fails if the process died or its log shows a panic or an abort.
    fn assert_healthy(&mut self) {
        assert!(
            self.process.0.try_wait().expect("process status").is_none(),
            "the server exited"
        );
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        for word in ["panicked", "overflow", "abort", "SIGSEGV"] {
            assert!(!log.contains(word), "the server log shows {word}:\n{log}");
        }
    }
}

/// A normal query answers.
async fn answers(client: &mut FlightSqlServiceClient<Channel>) {
    let batches = query(client, BY_DEPARTEMENT).await.expect("a normal query");
    assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deep_queries_are_refused_before_they_cost_anything() {
    let fixture = Fixture::new();
    let mut server = start(&fixture, "");
    let mut alice = server.client("alice").await;
    let sum = (0..2_000)
        .map(|_| "ben_nai_ann")
        .collect::<Vec<_>>()
        .join(" + ");
    let union = (0..500)
        .map(|_| "SELECT ben_sex_cod FROM ir_ben_r")
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let joins: String = (1..500)
        .map(|i| format!(" JOIN ir_ben_r t{i} ON t0.ben_nir_psa = t{i}.ben_nir_psa"))
        .collect();
    let nested = format!(
        "{}SELECT count(*) AS n FROM ir_ben_r{}",
        "SELECT n FROM (".repeat(500),
        ") t".repeat(500)
    );
    let cube = (0..20)
        .map(|i| format!("ben_res_dpt || '{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sets = (0..64)
        .map(|i| format!("(ben_res_dpt || '{i}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let attacks = [
        format!("SELECT sum({sum}) FROM ir_ben_r"),
        format!("SELECT count(*) FROM ({union}) u"),
        format!("SELECT count(*) FROM ir_ben_r t0{joins}"),
        nested,
        format!("SELECT count(*) FROM ir_ben_r GROUP BY CUBE({cube})"),
        format!("SELECT count(*) FROM ir_ben_r GROUP BY GROUPING SETS ({sets})"),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE ben_res_com IN ({})",
            vec!["'001'"; 200_000].join(", ")
        ),
        "SELECT count(*) FROM ir_ben_r WHERE CASE WHEN ben_nai_ann = 1940 THEN lpad(ben_res_com, 2147483647) = 'x' ELSE false END".to_string(),
    ];
    let names = [
        "2,000-term sum",
        "500-branch UNION ALL",
        "500-way join",
        "500 nested subqueries",
        "CUBE of 20",
        "64 grouping expressions",
        "1.4 MB SQL",
        "huge lpad under CASE",
    ];
    for (sql, name) in attacks.iter().zip(names) {
        let started = Instant::now();
        let error = query(&mut alice, sql).await.expect_err("refused");
        println!(
            "{name}: refused in {:?}, server at {} KiB: {error}",
            started.elapsed(),
            server.rss_kib()
        );
        let code = code(&error);
        assert!(
            matches!(
                code,
                Code::ResourceExhausted | Code::InvalidArgument | Code::PermissionDenied
            ),
            "{code:?}: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refusing took {:?}",
            started.elapsed()
        );
        server.assert_healthy();
        answers(&mut alice).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_costs_the_server_little_and_leaves_it_serving() {
    let fixture = Fixture::new();
    let mut server = start(&fixture, "login_threads = 2");
    let mut alice = server.client("alice").await;
    answers(&mut alice).await;
    let before = server.rss_kib();

    let until = Instant::now() + Duration::from_secs(15);
    let mut attackers = Vec::new();
    for thread in 0..64 {
        let channel = server.channel().await;
        attackers.push(tokio::spawn(async move {
            let (mut tried, mut refused_early) = (0u32, 0u32);
            while Instant::now() < until {
                let mut client = FlightSqlServiceClient::new(channel.clone());
                let name = if thread % 2 == 0 {
                    "alice".to_string()
                } else {
                    format!("guess{thread}")
                };
                let started = Instant::now();
                let outcome = client.handshake(&name, "wrong").await;
                assert!(outcome.is_err(), "a wrong password was accepted");
                tried += 1;
                if started.elapsed() < Duration::from_millis(5) {
                    refused_early += 1;
                }
            }
            (tried, refused_early)
        }));
    }
    let mut peak = before;
    while Instant::now() < until {
        peak = peak.max(server.rss_kib());
        // Another user, logged in before the flood, is still served.
        answers(&mut alice).await;
    }
    let (mut tried, mut early) = (0, 0);
    for attacker in attackers {
        let (t, e) = attacker.await.expect("an attacker");
        tried += t;
        early += e;
    }
    let after = server.rss_kib();
    println!(
        "{tried} logins tried, {early} refused at once; RSS {before} KiB before, {peak} at peak, {after} after"
    );
    assert!(tried > 64);
    assert!(
        (after as f64) <= before as f64 * 1.2,
        "memory did not come back: {before} KiB before, {after} KiB after"
    );
    server.assert_healthy();
    answers(&mut alice).await;
}

/// A table with margins over many small cells: its secondary suppression
/// runs the attacker's linear programs for a long time.
const LP_HEAVY: &str = "SELECT ben_res_dpt, ben_nai_ann / 5, ben_sex_cod, count(*) FROM ir_ben_r GROUP BY CUBE(ben_res_dpt, ben_nai_ann / 5, ben_sex_cod)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_release_work_stops_at_the_deadline_and_others_are_served_meanwhile() {
    let fixture = Fixture::new();
    let mut server = start(&fixture, "query_timeout_seconds = 10");
    let mut carol = server.client("carol").await;
    answers(&mut carol).await;
    let mut heavy = Vec::new();
    for _ in 0..2 {
        let mut alice = server.client("alice").await;
        heavy.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = query(&mut alice, LP_HEAVY).await;
            (outcome.map(|_| ()), started.elapsed())
        }));
    }
    // While both run, carol's small query is answered within 2 seconds.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        answers(&mut carol).await;
        slowest = slowest.max(started.elapsed());
    }
    println!("carol's slowest answer meanwhile: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "carol waited {slowest:?}");
    for task in heavy {
        let (outcome, took) = task.await.expect("a heavy query");
        println!("a heavy query ended after {took:?}: {outcome:?}");
        assert!(
            took < Duration::from_secs(20),
            "the deadline did not stop it: {took:?}"
        );
        if let Err(error) = outcome {
            assert_eq!(code(&error), Code::ResourceExhausted, "{error}");
        }
    }
    server.assert_healthy();
    answers(&mut carol).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_of_one_user_are_all_answered() {
    let fixture = Fixture::new();
    let mut server = start(&fixture, "max_concurrent_queries_per_user = 4");
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut client = server.client("alice").await;
        clients.push(tokio::spawn(async move {
            query(&mut client, BY_DEPARTEMENT).await.map(|b| b.len())
        }));
    }
    for client in clients {
        client
            .await
            .expect("a client")
            .expect("every client is answered, in turn");
    }
    server.assert_healthy();
}

/// A query long to compute (about two minutes here): each person's claims
/// joined three ways.
const LONG_TO_COMPUTE: &str = "SELECT a.prs_nat_ref, count(*) FROM er_prs_f a JOIN er_prs_f b ON a.ben_nir_psa = b.ben_nir_psa JOIN er_prs_f c ON b.ben_nir_psa = c.ben_nir_psa GROUP BY 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_query_frees_its_slot_within_a_second() {
    let fixture = Fixture::new();
    let mut server = start(&fixture, "max_concurrent_queries_per_user = 1");
    let mut alice = server.client("alice").await;
    let started = Instant::now();
    answers(&mut alice).await;
    let small = started.elapsed();

    let mut leaving = server.client("alice").await;
    let task = tokio::spawn(async move { query(&mut leaving, LONG_TO_COMPUTE).await.map(|_| ()) });
    // Let the long query take the slot (its start line is written then).
    let audit = fixture.audit_log();
    wait_for(|| started_lines(&audit) >= 2, Duration::from_secs(20));
    task.abort();
    let left = Instant::now();
    answers(&mut alice).await;
    let waited = left.elapsed();
    println!(
        "after the client left, the next query waited {waited:?} (a small query takes {small:?})"
    );
    assert!(
        waited < small + Duration::from_secs(1),
        "the slot was freed after {waited:?} (a small query takes {small:?})"
    );
    server.assert_healthy();
}

fn started_lines(audit: &Path) -> usize {
    if !audit.exists() {
        return 0;
    }
    audit_lines(audit)
        .iter()
        .filter(|l| l["outcome"] == "started")
        .count()
}

/// Waits for a condition, boundedly.
fn wait_for(condition: impl Fn() -> bool, limit: Duration) {
    let until = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < until, "the condition did not come");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_query_leaves_a_line_for_every_accepted_query() {
    let fixture = Fixture::new();
    let mut server = start(&fixture, "max_concurrent_queries_per_user = 8");
    let mut running = Vec::new();
    for _ in 0..4 {
        let mut client = server.client("alice").await;
        running.push(tokio::spawn(async move {
            query(&mut client, LONG_TO_COMPUTE).await.map(|_| ())
        }));
    }
    let audit = fixture.audit_log();
    wait_for(|| started_lines(&audit) >= 4, Duration::from_secs(30));
    // SIGKILL: nothing of the server's own runs.
    server.process.0.kill().expect("kill -9");
    server.process.0.wait().expect("reaped");
    for task in running {
        assert!(
            task.await.expect("a client").is_err(),
            "a killed server answered"
        );
    }
    let lines = audit_lines(&audit);
    let started: Vec<_> = lines.iter().filter(|l| l["outcome"] == "started").collect();
    assert_eq!(started.len(), 4);
    // The chain is whole: the lines are complete and sealed.
    let verify = std::process::Command::new(seuil_binary())
        .args(["audit", "verify"])
        .arg(&audit)
        .arg("--key-file")
        .arg(fixture.audit_key())
        .output()
        .expect("seuil audit verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // Deleting lines and recomputing the chain without the key is found.
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut kept: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    kept.remove(1);
    let mut prev = "0".repeat(64);
    let mut forged = String::new();
    for mut line in kept {
        let object = line.as_object_mut().unwrap();
        object.remove("hash");
        object.insert("prev".into(), prev.clone().into());
        let content = serde_json::to_string(&line).unwrap();
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(content.as_bytes()));
        forged.push_str(&format!(
            "{},\"hash\":\"{hash}\"}}\n",
            content.strip_suffix('}').unwrap()
        ));
        prev = hash;
    }
    std::fs::write(&audit, forged).unwrap();
    let verify = std::process::Command::new(seuil_binary())
        .args(["audit", "verify"])
        .arg(&audit)
        .arg("--key-file")
        .arg(fixture.audit_key())
        .output()
        .expect("seuil audit verify");
    assert!(!verify.status.success(), "a forged chain passed");
    assert!(String::from_utf8_lossy(&verify.stderr).contains("line 1: edited"));
}
