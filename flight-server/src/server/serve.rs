//! `seuil serve`: the configuration and flags, the engine, the server, and
//! a snippet that shows a statistician how to connect.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::cli::data::{DataArgs, open_engine};
use crate::config::ServerConfig;

use super::{RunningServer, Server};

/// Arguments of `seuil serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where the data, policy and users are.
    #[command(flatten)]
    pub data: DataArgs,
    /// Address to listen on (default: the configuration's, 127.0.0.1:50051;
    /// port 0 picks a free port).
    #[arg(long, env = "SEUIL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve plaintext on an address that is not loopback (only behind
    /// another layer that encrypts the traffic).
    #[arg(long)]
    pub insecure: bool,
    /// A data node to coordinate, as NAME=URL (repeatable; adds to the
    /// configuration's `[[nodes]]`): queries of its tables run there. With
    /// `--data`, that folder's tables are served too, from this process.
    #[arg(long = "node", value_name = "NAME=URL")]
    pub nodes: Vec<String>,
}

impl ServeArgs {
    /// The configuration, with the flags applied.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut config = self.data.config()?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        for node in &self.nodes {
            config.nodes.push(crate::config::NodeEntry::parse(node)?);
        }
        Ok(config)
    }
}

/// The lines printed once the server listens: where, and a Python snippet
/// to connect and run a first query. The first line is stable, for scripts
/// and tests that wait for the server: `seuil: serving Flight SQL on URI`.
pub fn welcome(server: &RunningServer, demo: bool) -> String {
    let uri = server.uri();
    let (user, password) = if demo {
        ("alice", "demo")
    } else {
        ("<user>", "<password>")
    };
    let tls_note = if server.tls() {
        "\n# With a private CA, add db_kwargs[\"adbc.flight.sql.client_option.tls_root_certs\"] = open(\"ca.pem\").read()"
    } else {
        ""
    };
    format!(
        r#"seuil: serving Flight SQL on {uri}

Connect from Python (pip install adbc-driver-flightsql pyarrow pandas):

    import adbc_driver_flightsql.dbapi as flightsql{tls_note}
    conn = flightsql.connect("{uri}", db_kwargs={{"username": "{user}", "password": "{password}"}}, autocommit=True)
    cur = conn.cursor()
    cur.execute("SELECT ben_res_dpt, count(*) AS persons FROM ir_ben_r GROUP BY ben_res_dpt ORDER BY 1")
    table = cur.fetch_arrow_table()
    print(table.to_pandas())
    print({{k.decode(): v.decode() for k, v in table.schema.metadata.items()}})  # what was released, suppressed

Press Ctrl-C to stop."#
    )
}

/// Runs `seuil serve` until Ctrl-C.
pub async fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    // Before the engine opens (and demo data is generated) for nothing.
    super::tls::check_listen(config.server.listen, config.tls.is_some(), args.insecure)?;
    let engine = if config.nodes.is_empty() {
        open_engine(&config).await?
    } else {
        // Local tables next to the nodes' only when asked for: the
        // default data folder is the demo's.
        crate::federation::coordinator::open_coordinator(&config, args.data.data.as_deref()).await?
    };
    let server = Server::new(engine, config)
        .insecure(args.insecure)
        .start()
        .await?;
    println!("{}", welcome(&server, args.data.config.is_none()));
    tokio::signal::ctrl_c().await?;
    eprintln!("seuil: stopping");
    server.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}
