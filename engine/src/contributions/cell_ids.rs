//! The cells one partition of the pass has seen, each with a number: a
//! batch's cells are numbered by DataFusion's own group values (the
//! vectorised hash tables of its aggregates), so that the per-row work of
//! the pass is on small integers, and each cell keeps its Arrow row
//! encoding, which the keyed hash and the merger of edge persons read.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::row::{Row, RowConverter, Rows};
use datafusion::common::Result;
use datafusion::logical_expr::EmitTo;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

/// The numbered cells of a partition.
pub(super) struct CellIds {
    /// The cells' values, by number; none for an aggregate without groups,
    /// whose one cell is number 0.
    values: Option<Box<dyn GroupValues>>,
    /// The types of the cell columns.
    types: Vec<DataType>,
    /// Each cell's row encoding, by number.
    rows: Rows,
    /// The row format of the cells (a stand-in column without groups).
    converter: RowConverter,
}

impl CellIds {
    /// The cells of `groups` columns (the first of `schema`), in the row
    /// format of `converter`.
    pub(super) fn new(schema: &SchemaRef, groups: usize, converter: RowConverter) -> Result<Self> {
        let values = if groups == 0 {
            None
        } else {
            let fields: Vec<_> = schema.fields()[..groups].to_vec();
            Some(new_group_values(
                Arc::new(Schema::new(fields)),
                &GroupOrdering::None,
            )?)
        };
        Ok(Self {
            values,
            types: schema.fields()[..groups]
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
            rows: converter.empty_rows(64, 1024),
            converter,
        })
    }

    /// The cells known so far.
    pub(super) fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// Cell `id`'s row encoding.
    pub(super) fn row(&self, id: usize) -> Row<'_> {
        self.rows.row(id)
    }

    /// The row format of the cells.
    pub(super) fn converter(&self) -> &RowConverter {
        &self.converter
    }

    /// The number of each row's cell, of the cell columns `columns` (the
    /// stand-in column without groups), numbering new cells.
    pub(super) fn intern(&mut self, columns: &[ArrayRef], ids: &mut Vec<usize>) -> Result<()> {
        let known = self.len();
        let rows = columns.first().map_or(0, |c| c.len());
        match &mut self.values {
            Some(values) => values.intern(columns, ids)?,
            None => {
                ids.clear();
                ids.resize(rows, 0);
            }
        }
        // New cells are numbered in the order of their first rows: encode
        // those rows only.
        let mut first_rows = Vec::new();
        let mut next = known;
        for (row, &id) in ids.iter().enumerate() {
            if id == next {
                first_rows.push(row as u32);
                next += 1;
            }
        }
        if !first_rows.is_empty() {
            let indices = UInt32Array::from(first_rows);
            let taken = columns
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            self.converter.append(&mut self.rows, &taken)?;
        }
        Ok(())
    }

    /// The number of each of `rows` (cells in the row format, as another
    /// partition encoded them), numbering new cells.
    pub(super) fn intern_rows<'a>(
        &mut self,
        rows: impl IntoIterator<Item = Row<'a>>,
        ids: &mut Vec<usize>,
    ) -> Result<()> {
        let mut columns = self.converter.convert_rows(rows)?;
        // The row format gives a dictionary's values back plain.
        for (column, data_type) in columns.iter_mut().zip(&self.types) {
            if column.data_type() != data_type {
                *column = cast(column, data_type)?;
            }
        }
        self.intern(&columns, ids)
    }

    /// The cells' columns, by number (none without groups).
    pub(super) fn emit(&mut self) -> Result<Vec<ArrayRef>> {
        match &mut self.values {
            Some(values) => values.emit(EmitTo::All),
            None => Ok(Vec::new()),
        }
    }
}
