//! Mutual TLS between a coordinator and a data node (DESIGN.md §3), with
//! certificates made for the test: the node answers only a client
//! certificate of its CA whose fingerprint it pins, and the coordinator
//! checks that the node's certificate carries the node's name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::TryStreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use seuil_engine::User;
use seuil_flight_server::config::{NodeEntry, ServerConfig, TlsSection};
use seuil_flight_server::federation::coordinator::open_coordinator;
use seuil_flight_server::federation::node::{DataNode, RunningNode, fingerprint};
use seuil_flight_server::federation::wire::CATALOG_ACTION;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

type Issuer = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Issuer {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `name`, for a client or a server; its PEM, key and
/// DER fingerprint.
fn issue(ca: &Issuer, name: &str, client: bool) -> (String, String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), fingerprint(cert.der()))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct Pki {
    ca: String,
    coordinator: (String, String),
    node: (String, String),
    same_ca_client: (String, String),
    other_ca_client: (String, String),
}

/// A node named `cnam` over `data`, with TLS and the coordinator pinned.
async fn tls_node(dir: &Path, data: &Path) -> (RunningNode, Pki) {
    let authority = ca("federation CA");
    let (coordinator_pem, coordinator_key, coordinator_print) =
        issue(&authority, "coordinator", true);
    let (node_pem, node_key, _) = issue(&authority, "cnam", false);
    let (same_pem, same_key, _) = issue(&authority, "someone", true);
    let (other_pem, other_key, _) = issue(&ca("another CA"), "coordinator", true);
    let mut config = ServerConfig::load(None).unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.data = data.to_path_buf();
    config.server.demo_persons = 0;
    config.server.audit_log = Some(dir.join("node.audit.jsonl"));
    config.server.audit_key_file = Some(dir.join("node.audit.key"));
    config.tls = Some(TlsSection {
        cert: write(dir, "cnam.pem", &node_pem),
        key: write(dir, "cnam.key", &node_key),
        client_ca: Some(write(dir, "ca.pem", &authority.pem())),
        client_fingerprints: vec![coordinator_print],
    });
    let engine = seuil_flight_server::cli::data::open_node_engine(&config)
        .await
        .unwrap();
    let node = DataNode::new(engine, config).start().await.unwrap();
    let pki = Pki {
        ca: authority.pem(),
        coordinator: (coordinator_pem, coordinator_key),
        node: (node_pem, node_key),
        same_ca_client: (same_pem, same_key),
        other_ca_client: (other_pem, other_key),
    };
    (node, pki)
}

/// Asks the node for its catalog as the holder of `identity`.
async fn catalog_as(
    node: &RunningNode,
    ca: &str,
    identity: &(String, String),
) -> Result<(), String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(&identity.0, &identity.1))
        .domain_name("cnam");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", node.local_addr().port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = FlightServiceClient::new(channel);
    let action = Action {
        r#type: CATALOG_ACTION.into(),
        body: Default::default(),
    };
    let answer = client
        .do_action(action)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    answer
        .into_inner()
        .try_collect::<Vec<_>>()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pinned_coordinator_gets_answers_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = seuil_tests::test_data(500, 7);
    let (node, pki) = tls_node(dir.path(), data.path()).await;

    assert!(catalog_as(&node, &pki.ca, &pki.coordinator).await.is_ok());
    // A client certificate of another CA: the handshake fails.
    let other = catalog_as(&node, &pki.ca, &pki.other_ca_client).await;
    assert!(other.is_err(), "{other:?}");
    // A certificate of the same CA that is not the pinned coordinator's,
    // and the node's own certificate used as a client: refused.
    let same = catalog_as(&node, &pki.ca, &pki.same_ca_client)
        .await
        .unwrap_err();
    assert!(same.contains("PermissionDenied"), "{same}");
    let own = catalog_as(&node, &pki.ca, &pki.node).await;
    assert!(own.is_err(), "{own:?}");

    // A coordinator over the node, through mTLS, serves a query; one that
    // expects another name for the node does not reach it.
    let mut config = ServerConfig::load(None).unwrap();
    config.federation.cert = Some(write(dir.path(), "coordinator.pem", &pki.coordinator.0));
    config.federation.key = Some(write(dir.path(), "coordinator.key", &pki.coordinator.1));
    config.federation.node_ca = Some(write(dir.path(), "federation-ca.pem", &pki.ca));
    config.nodes = vec![NodeEntry {
        name: "cnam".into(),
        url: format!("grpc+tls://127.0.0.1:{}", node.local_addr().port()),
    }];
    let coordinator = open_coordinator(&config, None).await.unwrap();
    let result = coordinator
        .query(
            &User::new("alice", "researcher"),
            "SELECT ben_sex_cod, count(*) FROM ir_ben_r GROUP BY 1",
        )
        .await
        .unwrap();
    let batches: Vec<_> = result.stream.try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    let mut misnamed = node_channel_entry(&node, "hospitals");
    misnamed.url = format!("grpc+tls://127.0.0.1:{}", node.local_addr().port());
    let channel =
        seuil_flight_server::federation::coordinator::node_channel(&misnamed, &config.federation)
            .unwrap();
    let mut client = FlightServiceClient::new(channel);
    let refused = client
        .do_action(Action {
            r#type: CATALOG_ACTION.into(),
            body: Default::default(),
        })
        .await;
    assert!(
        refused.is_err(),
        "a node certificate for cnam served as hospitals"
    );
    node.shutdown().await.unwrap();
}

fn node_channel_entry(node: &RunningNode, name: &str) -> NodeEntry {
    NodeEntry {
        name: name.into(),
        url: node.uri(),
    }
}

#[tokio::test]
async fn a_node_refuses_plaintext_off_loopback_and_tls_without_a_pin() {
    let dir = tempfile::tempdir().unwrap();
    let data = seuil_tests::test_data(200, 7);
    let mut config = ServerConfig::load(None).unwrap();
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    config.server.data = data.path().to_path_buf();
    config.server.demo_persons = 0;
    config.server.audit_log = Some(dir.path().join("node.audit.jsonl"));
    config.server.audit_key_file = Some(dir.path().join("node.audit.key"));
    let engine = seuil_flight_server::cli::data::open_node_engine(&config)
        .await
        .unwrap();
    let refused = DataNode::new(engine.clone(), config.clone())
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not a loopback address"), "{refused}");

    let authority = ca("federation CA");
    let (pem, key, _) = issue(&authority, "cnam", false);
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = Some(TlsSection {
        cert: write(dir.path(), "cnam.pem", &pem),
        key: write(dir.path(), "cnam.key", &key),
        client_ca: None,
        client_fingerprints: Vec::new(),
    });
    let unpinned = DataNode::new(engine, config)
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(unpinned.contains("client_fingerprints"), "{unpinned}");

    // The coordinator side: plaintext to a node off loopback is refused.
    let entry = NodeEntry {
        name: "cnam".into(),
        url: "grpc://192.0.2.1:50061".into(),
    };
    let error =
        seuil_flight_server::federation::coordinator::node_channel(&entry, &Default::default())
            .unwrap_err()
            .to_string();
    assert!(error.contains("not loopback"), "{error}");
}
