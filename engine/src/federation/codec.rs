//! Cells plans as bytes: DataFusion's own plan encoding (`datafusion-proto`)
//! with a small codec for what it does not know, seuil's tables and the one
//! seuil function whose definition is more than its name, and the node that
//! bounds each person's contributions in dp mode (as its parameters).
//!
//! A table travels as its identity ([`TableIdentity`]: the data table's
//! name, and whether the scan reads its keyed copy of the person index),
//! never as a path or a provider: the receiving side resolves it against
//! its own catalog, and a table it does not hold fails the decoding.
//! Functions travel by name and resolve in the receiver's registry, which
//! holds DataFusion's and seuil's functions only
//! ([`crate::functions::register`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{TableReference, plan_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan};
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use serde::{Deserialize, Serialize};

use crate::catalog::DataCatalog;
use crate::contributions::{BoundContributions, Bounds};
use crate::error::EngineError;
use crate::functions::person_sums::PersonSums;

/// The most largest contributions a decoded `seuil_person_sums` may rank: a
/// plan cannot make a node allocate more for it than a policy ever needs.
const MOST_LARGEST: usize = 16;

/// Which table a scan reads, as every side of a deployment names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIdentity {
    /// The data table.
    pub table: String,
    /// True for its keyed copy in the person index.
    pub keyed: bool,
}

/// The identity of `provider` in `data`: the raw table or keyed copy it is.
pub fn identify(data: &DataCatalog, provider: &Arc<dyn TableProvider>) -> Option<TableIdentity> {
    let same = |other: &Arc<dyn TableProvider>| {
        std::ptr::addr_eq(Arc::as_ptr(other), Arc::as_ptr(provider))
    };
    if let Some((name, _)) = data.tables().iter().find(|(_, t)| same(t)) {
        return Some(TableIdentity {
            table: name.clone(),
            keyed: false,
        });
    }
    let index = data.person_index()?;
    index
        .tables
        .iter()
        .find(|(_, t)| same(t))
        .map(|(name, _)| TableIdentity {
            table: name.clone(),
            keyed: true,
        })
}

/// The table `identity` names in `data`, if `data` holds it.
pub fn resolve(data: &DataCatalog, identity: &TableIdentity) -> Option<Arc<dyn TableProvider>> {
    if identity.keyed {
        data.person_index()?.table(&identity.table).cloned()
    } else {
        data.table(&identity.table).cloned()
    }
}

/// The codec of seuil's tables and functions, over one catalog: the sender's
/// (to name its tables) or the receiver's (to find them).
#[derive(Debug)]
struct SeuilCodec {
    data: DataCatalog,
}

impl LogicalExtensionCodec for SeuilCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> DfResult<Extension> {
        // The one extension node of cells plans: its parameters, checked
        // against its input as when it is built.
        let Ok(bounds) = serde_json::from_slice::<Bounds>(buf) else {
            return plan_err!("an extension node of the plan is not seuil's");
        };
        let [input] = inputs else {
            return plan_err!("bounded contributions take one input");
        };
        let node = BoundContributions::try_new(input.clone(), bounds)?;
        Ok(Extension {
            node: Arc::new(node),
        })
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        let Some(node) = node.node.as_any().downcast_ref::<BoundContributions>() else {
            return plan_err!("cells plans hold no other extension node");
        };
        serde_json::to_writer(buf, node.bounds())
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let Ok(identity) = serde_json::from_slice::<TableIdentity>(buf) else {
            return plan_err!("a scan of the plan names no table");
        };
        let Some(provider) = resolve(&self.data, &identity) else {
            return plan_err!("table {} is not held here", identity.table);
        };
        // Columns are read by position: the sender must have planned
        // against this very shape.
        if provider.schema().fields() != schema.fields() {
            return plan_err!("table {} has another shape here", identity.table);
        }
        Ok(provider)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        let Some(identity) = identify(&self.data, &node) else {
            return plan_err!("{table_ref} is not a table of the data");
        };
        serde_json::to_writer(buf, &identity)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        if name != PersonSums::NAME {
            return plan_err!("unknown aggregate function {name}");
        }
        let largest = match <[u8; 8]>::try_from(buf) {
            Ok(bytes) => u64::from_le_bytes(bytes),
            Err(_) => return plan_err!("{name} without its number of largest contributions"),
        };
        match usize::try_from(largest) {
            Ok(largest) if largest <= MOST_LARGEST => {
                Ok(Arc::new(AggregateUDF::from(PersonSums::new(largest))))
            }
            _ => plan_err!("{name} ranks at most {MOST_LARGEST} largest contributions"),
        }
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        if let Some(sums) = node.inner().downcast_ref::<PersonSums>() {
            buf.extend_from_slice(&(sums.largest() as u64).to_le_bytes());
        }
        Ok(())
    }
}

/// `plan`, a cells plan over the tables of `data`, as bytes.
pub fn encode_cells_plan(plan: &LogicalPlan, data: &DataCatalog) -> Result<Vec<u8>, EngineError> {
    let codec = SeuilCodec { data: data.clone() };
    logical_plan_to_bytes_with_extension_codec(plan, &codec)
        .map(|bytes| bytes.to_vec())
        .map_err(|e| {
            tracing::warn!(error = %e, "a cells plan cannot be encoded");
            EngineError::internal("a cells plan cannot be sent to its data node")
        })
}

/// The cells plan of `bytes`, over the tables of `data`, with functions
/// from `ctx`'s registry. The error says why in terms of the plan's shape
/// only (the bytes come from another process).
pub fn decode_cells_plan(
    bytes: &[u8],
    data: &DataCatalog,
    ctx: &TaskContext,
) -> Result<LogicalPlan, EngineError> {
    let codec = SeuilCodec { data: data.clone() };
    logical_plan_from_bytes_with_extension_codec(bytes, ctx, &codec).map_err(|e| {
        EngineError::InvalidQuery(format!(
            "the plan cannot be read here: {}",
            e.strip_backtrace()
        ))
    })
}
