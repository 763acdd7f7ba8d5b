//! # seuil-flight-server: the `seuil` binary
//!
//! This crate turns requests into engine calls and engine results into
//! responses. It holds the Flight SQL service that notebooks and BI tools
//! connect to, and the command-line tools:
//!
//! - `seuil serve`: the Flight SQL server (the demo with no arguments), a
//!   coordinator of data nodes with `--node NAME=URL`;
//! - `seuil node`: a data node serving its folder's tables to a
//!   coordinator ([`federation`]);
//! - `seuil query --user U "SQL"` and `seuil policy explain --user U "SQL"`:
//!   the engine in-process;
//! - `seuil policy check FILE [--data DIR]` and `seuil policy schema`: the
//!   policy checker and the format's JSON Schema;
//! - `seuil gen`: the synthetic SNDS;
//! - `seuil hash-password`: a password hash for the configuration;
//! - `seuil audit verify FILE`: checks the hash chain of the audit log.
//!
//! The server ([`server`]) is Arrow Flight SQL over gRPC (tonic, rustls):
//! Basic credentials at the Flight Handshake buy a bearer token; each query
//! is checked at `GetFlightInfo` and run at `DoGet`, under the user's query
//! slots and a deadline, its audit line synced to disk before the first
//! released batch streams out. Engine errors become gRPC codes in one place
//! ([`server::status`]): a policy refusal is `PermissionDenied`, bad SQL
//! `InvalidArgument`, a limit `ResourceExhausted`. [`server::Server`] starts
//! it in-process, which is how the end-to-end tests and benchmarks run it.
//!
//! The privacy rules live in `seuil-engine`; the policy format in
//! `seuil-policies`. Server configuration ([`config`]) holds what is not
//! policy: where to listen, limits, TLS, and which user has which role.

pub mod cli;
pub mod config;
pub mod federation;
pub mod passwords;
pub mod server;
