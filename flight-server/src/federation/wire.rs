//! What crosses between a coordinator and its data nodes, on Arrow Flight:
//!
//! - the action [`CATALOG_ACTION`], answered with the node's
//!   [`NodeCatalog`](seuil_engine::federation::NodeCatalog) as JSON;
//! - `DoGet` of a [`CellsTicket`] (the query's id and its cells plan, as
//!   datafusion-proto bytes), answered with the cells as Arrow batches and,
//!   last, a message of no data whose app metadata is a [`StreamSummary`]
//!   (JSON): what the node sent and what its scans read.
//!
//! No SQL text crosses: only plans, which the node checks again.

use serde::{Deserialize, Serialize};

/// The Flight action that asks a node for its catalog.
pub const CATALOG_ACTION: &str = "seuil.node.catalog";

/// The ticket of a cells plan.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CellsTicket {
    /// The coordinator's query id, for both audit logs.
    #[prost(string, tag = "1")]
    pub query_id: String,
    /// The cells plan (`seuil_engine::federation::encode_cells_plan`).
    #[prost(bytes = "vec", tag = "2")]
    pub plan: Vec<u8>,
}

/// What a node says, after the last batch of cells, about the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Rows of cells sent.
    pub rows: u64,
    /// Bytes of Flight data sent before this summary.
    pub bytes: u64,
    /// Bytes the plan's Parquet scans read.
    pub bytes_scanned: u64,
}
