//! What the data looks like, as far as policy validation needs to know.
//!
//! The caller (the engine or the CLI) reads the schemas of the data files and
//! describes them here; this crate never opens data itself.

use std::collections::BTreeMap;

/// The broad type of a data column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// Text.
    Text,
    /// Integer of any width.
    Integer,
    /// Floating point or decimal.
    Float,
    /// Date or timestamp.
    Temporal,
    /// Boolean.
    Boolean,
    /// Anything else, by its type name.
    Other(String),
}

impl ColumnType {
    /// True for integers and floats.
    pub fn is_numeric(&self) -> bool {
        matches!(self, ColumnType::Integer | ColumnType::Float)
    }
}

/// The tables of a data folder and their columns, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSchema {
    /// Where the data was read from, for messages.
    pub location: String,
    /// Columns of each table.
    pub tables: BTreeMap<String, Vec<(String, ColumnType)>>,
    /// True for one data node's share of a deployment's data: a table of
    /// the policy that is not here is held by another node, not an error.
    /// The tables that are here must still match the policy.
    pub share: bool,
}

impl DataSchema {
    /// The type of a column, if the table and column exist.
    pub fn column_type(&self, table: &str, column: &str) -> Option<&ColumnType> {
        self.tables
            .get(table)?
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, ty)| ty)
    }
}
