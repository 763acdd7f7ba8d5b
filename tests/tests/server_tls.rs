//! The server over TLS and mutual TLS, with certificates made for the test:
//! a private CA, a server certificate for `localhost`, a client certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod server_common;

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use server_common::{BY_DEPARTEMENT, Fixture, login, query, tls_channel};
use seuil_flight_server::config::TlsSection;
use tonic::transport::Identity;

struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
}

/// Writes `server.pem`, `server.key` and `ca.pem` into `dir`; returns the
/// CA and a client certificate signed by it.
fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "seuil test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["alice".to_string()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "alice");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    Pki {
        ca: ca.pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn tls_section(dir: &Path, mutual: bool) -> TlsSection {
    TlsSection {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: mutual.then(|| dir.join("ca.pem")),
        client_fingerprints: Vec::new(),
    }
}

#[tokio::test]
async fn queries_run_over_tls_and_plaintext_clients_are_turned_away() {
    let mut fixture = Fixture::new();
    let pki = make_pki(fixture.dir.path());
    fixture.config.tls = Some(tls_section(fixture.dir.path(), false));
    let server = fixture.start().await;
    assert!(server.uri().starts_with("grpc+tls://"));

    let channel = tls_channel(&server, &pki.ca, None)
        .await
        .expect("a TLS connection");
    let mut client = login(channel, "alice").await;
    let batches = query(&mut client, BY_DEPARTEMENT).await.unwrap();
    assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0);

    // A plaintext client gets no answer from a TLS server.
    let plaintext =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await;
    if let Ok(channel) = plaintext {
        let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
        assert!(client.handshake("alice", "demo").await.is_err());
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_configured_ca() {
    let mut fixture = Fixture::new();
    let pki = make_pki(fixture.dir.path());
    fixture.config.tls = Some(tls_section(fixture.dir.path(), true));
    let server = fixture.start().await;

    let identity = Identity::from_pem(&pki.client_cert, &pki.client_key);
    let channel = tls_channel(&server, &pki.ca, Some(identity))
        .await
        .expect("an mTLS connection");
    let mut client = login(channel, "alice").await;
    query(&mut client, BY_DEPARTEMENT).await.unwrap();

    // Without a client certificate, the TLS handshake fails, so no call
    // goes through (the failure may show at connect or at the first call).
    if let Ok(channel) = tls_channel(&server, &pki.ca, None).await {
        let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
        assert!(client.handshake("alice", "demo").await.is_err());
    }

    // A certificate from another CA is refused as well.
    let other = make_pki(tempfile::tempdir().unwrap().path());
    let stranger = Identity::from_pem(&other.client_cert, &other.client_key);
    if let Ok(channel) = tls_channel(&server, &pki.ca, Some(stranger)).await {
        let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
        assert!(client.handshake("alice", "demo").await.is_err());
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plaintext_off_loopback_needs_insecure() {
    let mut fixture = Fixture::new();
    fixture.config.server.listen = "0.0.0.0:0".parse().unwrap();
    let engine = seuil_flight_server::cli::data::open_engine(&fixture.config)
        .await
        .unwrap();
    let refused = seuil_flight_server::server::Server::new(engine, fixture.config.clone())
        .start()
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("--insecure"), "{refused}");
}
