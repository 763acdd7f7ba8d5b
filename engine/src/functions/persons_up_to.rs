//! Counting a cell's distinct persons, up to the threshold (rule 2).
//!
//! The release rule asks one question of each cell: does it hold at least
//! `min_persons` distinct persons? `count(DISTINCT person)` answers it by
//! keeping every person of every cell, which costs a set insertion for each
//! row of the data. [`persons_up_to`] keeps at most `k` persons per cell and
//! stops looking once it has them: a large cell is settled after its first
//! few distinct persons, and the rest of its rows cost one comparison each.
//! Its value is `min(distinct persons, k)`, which is all the release step
//! reads (`persons < k` suppresses).
//!
//! Persons are kept as 64-bit hashes with a fixed seed, so that partial
//! states computed on different partitions (or nodes) merge. Two persons
//! whose hashes collide count once: a collision can only make a cell look
//! smaller than it is and suppress it, never release a small one.

use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::hash_utils::{QualityRandomState, create_hashes};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility, lit,
};

use crate::functions::literal_argument::positive_literal_argument;

/// The hash seed of persons: fixed, so that partial states merge.
const PERSON_HASH: QualityRandomState = QualityRandomState::with_seed(0x5e11_5e11_5e11_5e11);

/// `seuil_persons_up_to(person, k)`: the number of distinct persons of a
/// cell, counted up to `k` (a literal).
pub fn persons_up_to(person: Expr, k: u32) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(AggregateUDF::from(PersonsUpTo::new())),
        vec![person, lit(i64::from(k))],
        false,
        None,
        vec![],
        None,
    ))
}

/// The aggregate function behind [`persons_up_to`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PersonsUpTo {
    signature: Signature,
}

impl Default for PersonsUpTo {
    fn default() -> Self {
        Self::new()
    }
}

impl PersonsUpTo {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// The `k` of a call: its second argument, a positive integer literal.
fn cap_of(args: &AccumulatorArgs) -> Result<usize> {
    positive_literal_argument(
        args,
        "seuil_persons_up_to takes a positive integer literal as its bound",
    )
}

impl AggregateUDFImpl for PersonsUpTo {
    fn name(&self) -> &str {
        "seuil_persons_up_to"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new_list(
            format!("{}[persons]", args.name),
            Field::new_list_field(DataType::UInt64, false),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PersonsAccumulator {
            persons: Vec::new(),
            cap: cap_of(&args)?,
            hashes: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(PersonsGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
            cap: cap_of(&args)?,
            hashes: Vec::new(),
        }))
    }
}

/// Adds a person's hash to a cell's persons, unless the cell has `cap`
/// persons already; tells whether it was added.
fn add(persons: &mut Vec<u64>, hash: u64, cap: usize) -> bool {
    let added = persons.len() < cap && !persons.contains(&hash);
    if added {
        persons.push(hash);
    }
    added
}

/// The hashes of a column of persons, into `buffer`.
fn hash_persons<'a>(array: &ArrayRef, buffer: &'a mut Vec<u64>) -> Result<&'a [u64]> {
    buffer.clear();
    buffer.resize(array.len(), 0);
    Ok(create_hashes([array], &PERSON_HASH, buffer)?)
}

/// The persons of cells as a list column (the partial state).
fn persons_list(cells: &[Vec<u64>]) -> ArrayRef {
    let mut builder = ListBuilder::new(UInt64Builder::new())
        .with_field(Field::new_list_field(DataType::UInt64, false));
    for persons in cells {
        builder.values().append_slice(persons);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// The persons of one row of a partial state.
fn state_persons(states: &ArrayRef, row: usize) -> Option<Vec<u64>> {
    let list = states.as_list::<i32>();
    if list.is_null(row) {
        return None;
    }
    let values = list.value(row);
    Some(values.as_primitive::<UInt64Type>().values().to_vec())
}

/// Without GROUP BY: one cell.
#[derive(Debug)]
struct PersonsAccumulator {
    persons: Vec<u64>,
    cap: usize,
    hashes: Vec<u64>,
}

impl Accumulator for PersonsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = &values[0];
        if self.persons.len() >= self.cap {
            return Ok(());
        }
        let hashes = hash_persons(array, &mut self.hashes)?;
        for (row, hash) in hashes.iter().enumerate() {
            if array.is_valid(row) {
                add(&mut self.persons, *hash, self.cap);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(self.persons.len() as i64)))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + (self.persons.capacity() + self.hashes.capacity()) * size_of::<u64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = persons_list(std::slice::from_ref(&self.persons));
        Ok(vec![ScalarValue::try_from_array(&list, 0)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for row in 0..states[0].len() {
            for hash in state_persons(&states[0], row).unwrap_or_default() {
                add(&mut self.persons, hash, self.cap);
            }
        }
        Ok(())
    }
}

/// With GROUP BY: the persons of each cell.
#[derive(Debug)]
struct PersonsGroupsAccumulator {
    cells: Vec<Vec<u64>>,
    /// Hashes held over all cells (for `size`, which must not walk them).
    stored: usize,
    cap: usize,
    hashes: Vec<u64>,
}

impl GroupsAccumulator for PersonsGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let array = &values[0];
        self.cells.resize_with(total_num_groups, Vec::new);
        // Once a cell has `cap` persons its count is settled: in most
        // batches of a query with few cells every row falls in such a cell,
        // and the batch needs no hashing at all.
        let cap = self.cap;
        if group_indices
            .iter()
            .all(|&cell| self.cells[cell].len() >= cap)
        {
            return Ok(());
        }
        let hashes = hash_persons(array, &mut self.hashes)?;
        for (row, &cell) in group_indices.iter().enumerate() {
            let persons = &mut self.cells[cell];
            if persons.len() >= self.cap
                || array.is_null(row)
                || opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row))
            {
                continue;
            }
            self.stored += usize::from(add(persons, hashes[row], self.cap));
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let cells = self.take(emit_to);
        let counts: Int64Array = cells.iter().map(|p| Some(p.len() as i64)).collect();
        Ok(Arc::new(counts))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let cells = self.take(emit_to);
        Ok(vec![persons_list(&cells)])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let array = &values[0];
        let mut buffer = Vec::new();
        let hashes = hash_persons(array, &mut buffer)?;
        let rows: Vec<Vec<u64>> = (0..array.len())
            .map(|row| {
                let kept = array.is_valid(row)
                    && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
                if kept { vec![hashes[row]] } else { Vec::new() }
            })
            .collect();
        Ok(vec![persons_list(&rows)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.cells.resize_with(total_num_groups, Vec::new);
        for (row, &cell) in group_indices.iter().enumerate() {
            for hash in state_persons(&values[0], row).unwrap_or_default() {
                self.stored += usize::from(add(&mut self.cells[cell], hash, self.cap));
            }
        }
        Ok(())
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.cells.capacity() * size_of::<Vec<u64>>()
            + (self.stored + self.hashes.capacity()) * size_of::<u64>()
    }
}

impl PersonsGroupsAccumulator {
    /// Takes the cells `emit_to` asks for.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<u64>> {
        let cells = emit_to.take_needed(&mut self.cells);
        self.stored -= cells.iter().map(Vec::len).sum::<usize>();
        cells
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// Cells `g` of persons `p` (with repeats and nulls), in partitions of a
    /// few rows so that partial states merge, and with a single partition
    /// for the grouped case to also run without repartitioning.
    async fn context(partitions: usize) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("p", DataType::Utf8, true),
        ]));
        let mut rows = Vec::new();
        for g in 0..6_i64 {
            // Cell g holds 2g distinct persons, each on three rows, and a null.
            for person in 0..2 * g {
                for _ in 0..3 {
                    rows.push((g, Some(format!("person-{person}"))));
                }
            }
            rows.push((g, None));
        }
        let batches: Vec<RecordBatch> = rows
            .chunks(5)
            .map(|chunk| {
                let g: Int64Array = chunk.iter().map(|(g, _)| Some(*g)).collect();
                let p: StringArray = chunk.iter().map(|(_, p)| p.clone()).collect();
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(g), Arc::new(p)]).unwrap()
            })
            .collect();
        let per_partition = batches.len().div_ceil(partitions);
        let parts: Vec<Vec<RecordBatch>> = batches
            .chunks(per_partition)
            .map(<[RecordBatch]>::to_vec)
            .collect();
        let ctx = SessionContext::new_with_config(
            SessionConfig::new().with_target_partitions(partitions),
        );
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
            .unwrap();
        ctx.register_udaf(AggregateUDF::from(PersonsUpTo::new()));
        ctx
    }

    async fn ints(ctx: &SessionContext, sql: &str) -> Vec<i64> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                b.column(b.num_columns() - 1)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn counts_distinct_persons_up_to_the_bound_per_cell() {
        for partitions in [1, 4] {
            let ctx = context(partitions).await;
            let counted = ints(
                &ctx,
                "SELECT g, seuil_persons_up_to(p, 5) FROM t GROUP BY g ORDER BY g",
            )
            .await;
            let exact = ints(
                &ctx,
                "SELECT g, least(count(DISTINCT p), 5) FROM t GROUP BY g ORDER BY g",
            )
            .await;
            assert_eq!(counted, vec![0, 2, 4, 5, 5, 5]);
            assert_eq!(counted, exact, "{partitions} partitions");
        }
    }

    #[tokio::test]
    async fn counts_one_cell_without_group_by() {
        for partitions in [1, 4] {
            let ctx = context(partitions).await;
            assert_eq!(
                ints(&ctx, "SELECT seuil_persons_up_to(p, 7) FROM t").await,
                vec![7]
            );
            assert_eq!(
                ints(&ctx, "SELECT seuil_persons_up_to(p, 100) FROM t").await,
                vec![10],
                "the largest cell's 10 persons, counted once across cells"
            );
        }
    }

    #[tokio::test]
    async fn the_bound_must_be_a_positive_literal() {
        let ctx = context(1).await;
        for sql in [
            "SELECT seuil_persons_up_to(p, 0) FROM t",
            "SELECT seuil_persons_up_to(p, g) FROM t GROUP BY g",
        ] {
            let error = match ctx.sql(sql).await {
                Ok(frame) => frame.collect().await.unwrap_err(),
                Err(error) => error,
            };
            assert!(
                error.to_string().contains("positive integer literal"),
                "{error}"
            );
        }
    }
}
