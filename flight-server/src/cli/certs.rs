//! `seuil certs`: a private CA and the certificates of a local federation
//! (DESIGN.md §3): one for the coordinator, which it presents to its nodes,
//! and one per node, issued for the node's name, which the coordinator
//! checks. The coordinator's fingerprint is printed, for each node's
//! `[tls] client_fingerprints`. For a real deployment, certificates come
//! from the site's own PKI; the README shows the `openssl` equivalent.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::federation::node::fingerprint;

/// Arguments of `seuil certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Folder to write the CA and certificates into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// A data node's name (repeatable): its certificate is issued for it.
    #[arg(long = "node", value_name = "NAME", required = true)]
    pub nodes: Vec<String>,
}

fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    std::fs::write(path, text)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| anyhow::anyhow!("cannot protect {}: {e}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

/// What `seuil certs` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The SHA-256 fingerprint of the coordinator's certificate.
    pub coordinator_fingerprint: String,
}

/// Writes `ca.pem`, `coordinator.pem`/`.key` and `NODE.pem`/`.key` for each
/// node into `out`.
pub fn write_certs(out: &Path, nodes: &[String]) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "seuil federation CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    write(&out.join("ca.pem"), &ca.pem(), false)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["coordinator".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "seuil coordinator");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let coordinator = params.signed_by(&key, &ca)?;
    write(&out.join("coordinator.pem"), &coordinator.pem(), false)?;
    write(&out.join("coordinator.key"), &key.serialize_pem(), true)?;

    for node in nodes {
        if node.is_empty() || !node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            anyhow::bail!("node name {node:?}: use letters, digits and dashes (it is a TLS name)");
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![node.clone()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca)?;
        write(&out.join(format!("{node}.pem")), &cert.pem(), false)?;
        write(&out.join(format!("{node}.key")), &key.serialize_pem(), true)?;
    }
    Ok(Written {
        coordinator_fingerprint: fingerprint(coordinator.der()),
    })
}

/// Runs `seuil certs`.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let written = write_certs(&args.out, &args.nodes)?;
    let out = args.out.display();
    println!("wrote {out}/ca.pem, coordinator.pem and .key, and for each node NAME.pem and .key");
    println!();
    println!("On each node, in its configuration file:");
    println!("  [tls]");
    println!("  cert = \"{out}/NAME.pem\"");
    println!("  key = \"{out}/NAME.key\"");
    println!("  client_ca = \"{out}/ca.pem\"");
    println!(
        "  client_fingerprints = [\"{}\"]",
        written.coordinator_fingerprint
    );
    println!();
    println!("On the coordinator:");
    println!("  [federation]");
    println!("  cert = \"{out}/coordinator.pem\"");
    println!("  key = \"{out}/coordinator.key\"");
    println!("  node_ca = \"{out}/ca.pem\"");
    Ok(())
}
