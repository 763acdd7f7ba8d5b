//! Cells plans that run where the data lives (DESIGN.md §3, "Federation").
//!
//! A coordinator runs the privacy rewrite once and sends each released
//! aggregate's cells plan to the data node that holds its tables, as a
//! DataFusion plan ([`codec`]), never as SQL text. The node checks the plan
//! again against its own policy ([`egress`]) before running it, and only
//! cells come back; the release step runs on the coordinator.
//!
//! The engine knows no network protocol: a [`nodes::CellsRunner`] (the
//! server's Flight client) carries the bytes, and [`nodes::NodeCatalog`]
//! is what a node says of its tables.

pub mod codec;
pub mod egress;
pub mod nodes;

pub use codec::{TableIdentity, decode_cells_plan, encode_cells_plan};
pub use egress::check_egress;
pub use nodes::{CellsRunner, NodeCatalog, NodeCells, NodeTable, RemoteTable};
