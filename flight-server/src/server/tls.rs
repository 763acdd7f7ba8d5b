//! Transport security: TLS with rustls (through tonic) when configured,
//! mutual TLS when a client CA is, and plaintext only where no one else can
//! listen: on loopback, or anywhere with an explicit `--insecure`.

use std::net::SocketAddr;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsSection;

/// Refuses to serve plaintext on an address other hosts can reach, unless
/// the operator said so.
pub fn check_listen(addr: SocketAddr, tls: bool, insecure: bool) -> anyhow::Result<()> {
    if tls || insecure || addr.ip().is_loopback() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve plaintext on {addr}, which is not a loopback address: passwords and results would cross the network in clear. Configure [tls] (cert and key) in the configuration file, listen on 127.0.0.1, or pass --insecure if another layer encrypts the traffic"
    )
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS {what} {}: {e}", path.display()))
}

/// The server's TLS settings from the configuration, if any.
pub fn server_tls(section: Option<&TlsSection>) -> anyhow::Result<Option<ServerTlsConfig>> {
    let Some(section) = section else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read(&section.cert, "certificate")?,
        read(&section.key, "key")?,
    );
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &section.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_for_loopback_unless_insecure() {
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:50051".parse().unwrap();
        let anywhere: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert!(check_listen(loopback, false, false).is_ok());
        assert!(check_listen(v6_loopback, false, false).is_ok());
        let refused = check_listen(anywhere, false, false)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--insecure"), "{refused}");
        assert!(check_listen(anywhere, true, false).is_ok());
        assert!(check_listen(anywhere, false, true).is_ok());
    }

    #[test]
    fn missing_certificates_are_named() {
        let section = TlsSection {
            cert: "/nonexistent/server.pem".into(),
            key: "/nonexistent/server.key".into(),
            client_ca: None,
            client_fingerprints: Vec::new(),
        };
        let error = server_tls(Some(&section)).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/server.pem"), "{error}");
    }
}
