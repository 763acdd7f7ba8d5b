//! The totals per cell of one partition of the pass: each person's bounded
//! partials in the cells it keeps are added here as the person ends, so
//! that the pass emits one row per cell instead of one per (cell, person).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{Row, RowConverter, Rows};
use datafusion::common::{Result, exec_err};
use hashbrown::HashTable;

use super::node::Partial;
use super::running::Running;

/// The cells a partition has seen, each with the sums of its persons'
/// bounded partials and the number of persons who keep it.
pub(super) struct CellTotals {
    /// Each cell once, in the Arrow row format.
    rows: Rows,
    /// The hash of each cell's row, under the pass's hasher.
    hashes: Vec<u64>,
    /// Positions in `rows`, by hash.
    table: HashTable<usize>,
    persons: Vec<i64>,
    /// Sums per cell, `partials` after `partials`.
    sums: Vec<i64>,
    /// Whether any person has a value for the sum of the same position.
    present: Vec<bool>,
    partials: Vec<Partial>,
}

impl CellTotals {
    pub(super) fn new(converter: &RowConverter, partials: &[Partial]) -> Self {
        Self {
            rows: converter.empty_rows(64, 1024),
            hashes: Vec::new(),
            table: HashTable::new(),
            persons: Vec::new(),
            sums: Vec::new(),
            present: Vec::new(),
            partials: partials.to_vec(),
        }
    }

    /// Adds one person's `running` partials in the cell `row` (of hash
    /// `hash`), bounded.
    pub(super) fn add(&mut self, row: Row<'_>, hash: u64, running: &[Running]) -> Result<()> {
        let width = self.partials.len();
        let rows = &self.rows;
        let cell = match self.table.find(hash, |&i| rows.row(i) == row) {
            Some(&i) => i,
            None => {
                let i = self.rows.num_rows();
                self.rows.push(row);
                self.hashes.push(hash);
                let hashes = &self.hashes;
                self.table.insert_unique(hash, i, |&j| hashes[j]);
                self.persons.push(0);
                self.sums.resize(self.sums.len() + width, 0);
                self.present.resize(self.present.len() + width, false);
                i
            }
        };
        self.persons[cell] += 1;
        for (j, (partial, state)) in self.partials.iter().zip(running).enumerate() {
            let Some(value) = state.bounded(partial) else {
                continue;
            };
            let at = cell * width + j;
            // Bounded partials of a million persons stay far from the
            // limit; a sum that would pass it fails rather than wrap.
            let Some(sum) = self.sums[at].checked_add(value) else {
                return exec_err!("a sum of bounded contributions overflows");
            };
            self.sums[at] = sum;
            self.present[at] = true;
        }
        Ok(())
    }

    /// The totals as batches of at most `batch_size` rows, in `schema`:
    /// the cell's columns (`groups` of them), the sums, the persons.
    pub(super) fn batches(
        &self,
        converter: &RowConverter,
        schema: &SchemaRef,
        groups: usize,
        batch_size: usize,
    ) -> Result<Vec<RecordBatch>> {
        let cells = self.rows.num_rows();
        if cells == 0 {
            return Ok(Vec::new());
        }
        let mut columns = converter.convert_rows(self.rows.iter())?;
        // Without cell columns, the one cell's stand-in.
        columns.truncate(groups);
        // The row format gives a dictionary's values back plain: the
        // columns as the schema has them.
        for (column, field) in columns.iter_mut().zip(schema.fields()) {
            if column.data_type() != field.data_type() {
                *column = cast(column, field.data_type())?;
            }
        }
        let width = self.partials.len();
        for j in 0..width {
            let sums: Int64Array = (0..cells)
                .map(|i| self.present[i * width + j].then(|| self.sums[i * width + j]))
                .collect();
            columns.push(Arc::new(sums) as ArrayRef);
        }
        columns.push(Arc::new(Int64Array::from(self.persons.clone())));
        let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
        let size = batch_size.max(1);
        Ok((0..cells)
            .step_by(size)
            .map(|at| batch.slice(at, size.min(cells - at)))
            .collect())
    }
}
