//! The real `seuil` binary: `seuil serve --config FILE` on a free port
//! (waited for by reading the line it prints once it listens, no sleeps), a
//! query through it, then `seuil audit verify` on the log it wrote, intact
//! and tampered with; and `kill -9` of it while dp queries are charged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod server_common;

use std::path::Path;
use std::process::Command;

use server_common::{BY_DEPARTEMENT, Fixture, code, login, query, serve, seuil_binary};
use seuil_engine::budget::BudgetLedger;
use tonic::transport::{Channel, Endpoint};

fn audit_verify(log: &Path, key: &Path) -> std::process::Output {
    Command::new(seuil_binary())
        .args(["audit", "verify"])
        .arg(log)
        .arg("--key-file")
        .arg(key)
        .output()
        .expect("running seuil audit verify")
}

#[tokio::test]
async fn the_binary_serves_queries_and_its_audit_log_verifies() {
    let fixture = Fixture::new();
    let config = fixture.config_file("max_concurrent_queries_per_user = 2");
    let (server, uri) = serve(&config);
    let address = uri.strip_prefix("grpc://").expect("a plaintext URI");
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect("connecting to seuil serve");
    let mut client = login(channel, "alice").await;
    let batches = query(&mut client, BY_DEPARTEMENT).await.unwrap();
    assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 10);
    let refused = query(&mut client, "SELECT * FROM er_prs_f")
        .await
        .unwrap_err();
    assert_eq!(code(&refused), tonic::Code::PermissionDenied);
    drop(server);

    let intact = audit_verify(&fixture.audit_log(), &fixture.audit_key());
    let stdout = String::from_utf8_lossy(&intact.stdout);
    assert!(intact.status.success(), "{stdout}");
    // The query ran (started, ended); the refused one was refused when checked.
    assert!(
        stdout.starts_with("3 entries, chain intact, reaches the head kept apart"),
        "{stdout}"
    );

    // Swap the two lines: the first line no longer chains to zeros.
    let text = std::fs::read_to_string(fixture.audit_log()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(fixture.audit_log(), format!("{}\n{}\n", lines[1], lines[0])).unwrap();
    let broken = audit_verify(&fixture.audit_log(), &fixture.audit_key());
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(stderr.contains(":line 1:"), "{stderr}");
}

#[test]
fn the_binary_refuses_plaintext_off_loopback() {
    let fixture = Fixture::new();
    let config = fixture.config_file("max_concurrent_queries_per_user = 2");
    let output = Command::new(seuil_binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&config)
        .output()
        .expect("running seuil serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
}

async fn connect(uri: &str) -> Channel {
    let address = uri.strip_prefix("grpc://").expect("a plaintext URI");
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect("connecting to seuil serve")
}

/// A dp query by bob through `channel`: the charge id of its answer, if
/// one came back.
async fn charged_answer(channel: Channel) -> Option<String> {
    let mut bob = login(channel, "bob").await;
    let batches = query(
        &mut bob,
        "SELECT ben_sex_cod, count(*) FROM ir_ben_r GROUP BY 1",
    )
    .await
    .ok()?;
    Some(batches.first()?.schema().metadata()["seuil.dp.charge_id"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_charging_never_releases_an_uncharged_answer() {
    let fixture = Fixture::new();
    let config = fixture.config_file("max_concurrent_queries_per_user = 8");
    let mut released: Vec<String> = Vec::new();
    for _ in 0..3 {
        let (server, uri) = serve(&config);
        let channel = connect(&uri).await;
        let mut queries = tokio::task::JoinSet::new();
        for _ in 0..3 {
            queries.spawn(charged_answer(channel.clone()));
        }
        // The first answer, then kill -9 while the others may be charging.
        while let Some(answer) = queries.join_next().await {
            if let Ok(Some(id)) = answer {
                released.push(id);
                break;
            }
        }
        drop(server);
        while let Some(answer) = queries.join_next().await {
            // A query cut by the kill fails, in the client or its task.
            if let Ok(Some(id)) = answer {
                released.push(id);
            }
        }
    }
    assert!(released.len() >= 3, "every round released an answer");
    // The ledger opens clean and holds a charge for every released answer.
    let ledger = BudgetLedger::open(&fixture.budget_ledger()).unwrap();
    assert!(ledger.check_integrity().unwrap());
    for id in &released {
        assert!(ledger.has_charge(id).unwrap(), "answer {id} has no charge");
    }
    let (charges, _) = ledger.total().unwrap();
    assert!(charges >= released.len() as u64);
    drop(ledger);
    // The budget is spent through the crashes: what was charged and never
    // answered stays spent, and no more than the budget is ever charged.
    let (server, uri) = serve(&config);
    let channel = connect(&uri).await;
    let mut answered = released.len();
    while charged_answer(channel.clone()).await.is_some() {
        answered += 1;
        assert!(answered <= 10, "more answers than the budget allows");
    }
    drop(server);
    let ledger = BudgetLedger::open(&fixture.budget_ledger()).unwrap();
    assert!(ledger.check_integrity().unwrap());
    assert_eq!(ledger.total().unwrap(), (10, 10_000_000));
}
