//! The real `seuil` binary: `seuil serve --config FILE` on a free port
//! (waited for by reading the line it prints once it listens, no sleeps), a
//! query through it, then `seuil audit verify` on the log it wrote, intact
//! and tampered with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod server_common;

use std::path::Path;
use std::process::Command;

use server_common::{BY_DEPARTEMENT, Fixture, code, login, query, serve, seuil_binary};
use tonic::transport::Endpoint;

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
