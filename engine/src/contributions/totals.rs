//! The totals per cell of one partition of the pass: each person's bounded
//! partials in the cells it keeps are added here as the person ends, so
//! that the pass emits one row per cell instead of one per (cell, person).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, exec_err};

use super::node::Partial;
use super::running::Running;

/// By cell number ([`super::cell_ids`]): the sums of its persons' bounded
/// partials and the number of persons who keep it.
pub(super) struct CellTotals {
    persons: Vec<i64>,
    /// Sums per cell, `partials` after `partials`.
    sums: Vec<i64>,
    /// Whether any person has a value for the sum of the same position.
    present: Vec<bool>,
    partials: Vec<Partial>,
}

impl CellTotals {
    pub(super) fn new(partials: &[Partial]) -> Self {
        Self {
            persons: Vec::new(),
            sums: Vec::new(),
            present: Vec::new(),
            partials: partials.to_vec(),
        }
    }

    /// Room for cells numbered below `cells`.
    pub(super) fn grow(&mut self, cells: usize) {
        if cells > self.persons.len() {
            let width = self.partials.len();
            self.persons.resize(cells, 0);
            self.sums.resize(cells * width, 0);
            self.present.resize(cells * width, false);
        }
    }

    /// Adds one person's `running` partials in cell `cell`, bounded.
    pub(super) fn add(&mut self, cell: usize, running: &[Running]) -> Result<()> {
        self.grow(cell + 1);
        let width = self.partials.len();
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

    /// The totals of the cells some person keeps, as batches of at most
    /// `batch_size` rows in `schema`: the cells' columns (`cells`, by
    /// number), the sums, the persons.
    pub(super) fn batches(
        &self,
        cells: Vec<ArrayRef>,
        schema: &SchemaRef,
        batch_size: usize,
    ) -> Result<Vec<RecordBatch>> {
        let indices: UInt32Array = (0..self.persons.len())
            .filter(|&i| self.persons[i] > 0)
            .map(|i| i as u32)
            .collect();
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        let kept = indices.values();
        let mut columns = cells
            .iter()
            .map(|column| take(column.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // The columns as the schema has them.
        for (column, field) in columns.iter_mut().zip(schema.fields()) {
            if column.data_type() != field.data_type() {
                *column = cast(column, field.data_type())?;
            }
        }
        let width = self.partials.len();
        for j in 0..width {
            let sums: Int64Array = kept
                .iter()
                .map(|&i| {
                    let at = i as usize * width + j;
                    self.present[at].then(|| self.sums[at])
                })
                .collect();
            columns.push(Arc::new(sums) as ArrayRef);
        }
        let persons: Int64Array = kept.iter().map(|&i| self.persons[i as usize]).collect();
        columns.push(Arc::new(persons));
        let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
        let rows = batch.num_rows();
        let size = batch_size.max(1);
        Ok((0..rows)
            .step_by(size)
            .map(|at| batch.slice(at, size.min(rows - at)))
            .collect())
    }
}
