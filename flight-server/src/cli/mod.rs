//! The `seuil` subcommands other than `serve`: each turns its arguments into
//! calls of the engine, the policy checker or the generator, and prints.

pub mod budget;
pub mod certs;
pub mod data;
pub mod generate;
pub mod policy;
pub mod query;
