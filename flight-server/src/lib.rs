//! # seuil-flight-server: the `seuil` binary
//!
//! This crate turns requests into engine calls and engine results into
//! responses. It holds the Flight SQL service that notebooks and BI tools
//! connect to, and the command-line tools:
//!
//! - `seuil serve`: the Flight SQL server (the demo with no arguments);
//! - `seuil query --user U "SQL"` and `seuil policy explain --user U "SQL"`:
//!   the engine in-process;
//! - `seuil policy check FILE [--data DIR]` and `seuil policy schema`: the
//!   policy checker and the format's JSON Schema;
//! - `seuil gen`: the synthetic SNDS;
//! - `seuil hash-password`: a password hash for the configuration.
//!
//! The privacy rules live in `seuil-engine`; the policy format in
//! `seuil-policies`. Server configuration ([`config`]) holds what is not
//! policy: where to listen, limits, TLS, and which user has which role.

pub mod cli;
pub mod config;
pub mod passwords;
