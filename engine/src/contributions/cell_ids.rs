//! The cells one partition of the pass has seen, each with a number: a
//! batch's cells are numbered by DataFusion's own group values (the
//! vectorised hash tables of its aggregates), so that the per-row work of
//! the pass is on small integers, and each cell keeps its Arrow row
//! encoding, which the keyed hash and the merger of edge persons read.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, NullArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::EmitTo;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

/// The row format of the cells: their columns, or, for an aggregate
/// without groups (one cell), a column of NULLs that stands for it, as the
/// row format needs a column to count rows.
fn cell_fields(schema: &SchemaRef, groups: usize) -> Vec<SortField> {
    if groups == 0 {
        return vec![SortField::new(DataType::Null)];
    }
    schema.fields()[..groups]
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect()
}

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
    /// The cells of `groups` columns, the first of `schema`.
    pub(super) fn new(schema: &SchemaRef, groups: usize) -> Result<Self> {
        let converter = RowConverter::new(cell_fields(schema, groups))?;
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

    /// The number of each row's cell in `batch`, whose first `groups`
    /// columns are the cell's, numbering new cells.
    pub(super) fn intern_batch(&mut self, batch: &RecordBatch, ids: &mut Vec<usize>) -> Result<()> {
        let columns = if self.values.is_none() {
            vec![Arc::new(NullArray::new(batch.num_rows())) as ArrayRef]
        } else {
            batch.columns()[..self.types.len()].to_vec()
        };
        self.intern(&columns, ids)
    }

    /// The number of each row's cell, of the cell columns `columns` (the
    /// stand-in column without groups), numbering new cells.
    fn intern(&mut self, columns: &[ArrayRef], ids: &mut Vec<usize>) -> Result<()> {
        let known = self.len();
        let rows = columns.first().map_or(0, |c| c.len());
        let numbered = match &mut self.values {
            Some(values) => {
                values.intern(columns, ids)?;
                values.len()
            }
            None => {
                ids.clear();
                ids.resize(rows, 0);
                known.max(usize::from(rows > 0))
            }
        };
        // Encode the first row of each new cell only. Group values number
        // new cells in no promised order (a vectorised table numbers the
        // rows whose hashes collide last), so each new number finds its
        // first row.
        let mut firsts: Vec<Option<u32>> = vec![None; numbered.saturating_sub(known)];
        for (row, &id) in ids.iter().enumerate() {
            if let Some(first @ None) = id.checked_sub(known).and_then(|i| firsts.get_mut(i)) {
                *first = Some(row as u32);
            }
        }
        let Some(first_rows) = firsts.into_iter().collect::<Option<Vec<u32>>>() else {
            return internal_err!("a cell was numbered without a row");
        };
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    use super::*;

    #[test]
    fn each_number_keeps_its_cells_encoding() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int32, false),
        ]));
        let mut ids = CellIds::new(&schema, 2).unwrap();
        let converter = RowConverter::new(vec![
            SortField::new(DataType::Utf8),
            SortField::new(DataType::Int32),
        ])
        .unwrap();
        let mut numbers = Vec::new();
        for batch in 0..20u32 {
            // Cells seen again and new ones, NULLs among them.
            let a: StringArray = (0..500u32)
                .map(|i| (i % 13 != 0).then(|| format!("c{}", (i * 7 + batch * 31) % 997)))
                .collect();
            let b = Int32Array::from_iter_values((0..500).map(|i| i % 5));
            let columns: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b)];
            let rows = RecordBatch::try_new(Arc::clone(&schema), columns.clone()).unwrap();
            ids.intern_batch(&rows, &mut numbers).unwrap();
            let encoded = converter.convert_columns(&columns).unwrap();
            for (row, &id) in numbers.iter().enumerate() {
                assert_eq!(ids.row(id), encoded.row(row), "batch {batch}, row {row}");
            }
        }
        let emitted = ids.emit().unwrap();
        assert_eq!(emitted[0].len(), ids.len());
    }

    #[test]
    fn without_groups_every_row_is_cell_zero() {
        let schema = Arc::new(Schema::new(vec![Field::new("p", DataType::UInt32, true)]));
        let mut ids = CellIds::new(&schema, 0).unwrap();
        let mut numbers = Vec::new();
        let persons = |n: u32| {
            let column: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..n));
            RecordBatch::try_new(Arc::clone(&schema), vec![column]).unwrap()
        };
        ids.intern_batch(&persons(0), &mut numbers).unwrap();
        assert_eq!(ids.len(), 0);
        ids.intern_batch(&persons(3), &mut numbers).unwrap();
        assert_eq!((ids.len(), numbers), (1, vec![0, 0, 0]));
    }
}
