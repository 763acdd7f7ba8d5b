//! A cell's largest per-person contributions, for the dominance rules (rule 6).
//!
//! The dominance rule (`dominance = { n, k }`) and the p% rule compare a
//! cell's total with its largest, second largest, ... `n`-th largest
//! per-person contributions. These used to be found with `row_number()`
//! windows partitioned by the cell and ordered by the contribution, then
//! `max(CASE WHEN row_number = i THEN contribution END)` in the cell's
//! aggregate. A window sorts every per-person row of every cell, once per
//! sensitive measure: on a million persons that is tens of millions of rows
//! sorted, and it cost more than the rest of the query.
//!
//! [`nth_largest`] is an aggregate that answers the same question in the
//! cell's aggregate itself: each cell keeps its `n` largest values seen so
//! far, sorted, so a row costs one comparison with the smallest of them
//! unless it enters them. Its value is exactly what the windows gave:
//!
//! - the `n`-th largest non-null value, with equal values counted apart
//!   (two persons with the same contribution hold ranks 1 and 2, as with
//!   `row_number`);
//! - NULL when the cell has fewer than `n` non-null values (NULL
//!   contributions never outrank values: the windows sorted `NULLS LAST`);
//! - values ordered as Arrow sorts them ([`f64::total_cmp`]), so that even
//!   NaN and signed zeros rank as they did.
//!
//! Values are `Float64`, as the release step reads them; the cells plan
//! casts integer and decimal contributions, which keeps their order. The
//! partial state is the sorted list of the kept values, so states computed
//! on different partitions (or nodes) merge into the cell's `n` largest.

use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Float64Builder, ListBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility, lit,
};

use crate::functions::literal_argument::positive_literal_argument;

/// `seuil_nth_largest(value, n)`: the `n`-th largest non-null `value` of a
/// cell (ties counted apart), or NULL when it has fewer than `n`. `value`
/// is a `Float64` (other numeric types are cast by DataFusion's type
/// coercion); `n` is a positive literal.
pub fn nth_largest(value: Expr, n: usize) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(AggregateUDF::from(NthLargest::new())),
        vec![value, lit(n as i64)],
        false,
        None,
        vec![],
        None,
    ))
}

/// The aggregate function behind [`nth_largest`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NthLargest {
    signature: Signature,
}

impl Default for NthLargest {
    fn default() -> Self {
        Self::new()
    }
}

impl NthLargest {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The `n` of a call: its second argument, a positive integer literal.
fn rank_of(args: &AccumulatorArgs) -> Result<usize> {
    positive_literal_argument(
        args,
        "seuil_nth_largest takes a positive integer literal as its rank",
    )
}

impl AggregateUDFImpl for NthLargest {
    fn name(&self) -> &str {
        "seuil_nth_largest"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [value, n]
                if (value.is_numeric() || value.is_null()) && (n.is_integer() || n.is_null()) =>
            {
                Ok(vec![DataType::Float64, DataType::Int64])
            }
            _ => plan_err!("seuil_nth_largest takes a numeric value and an integer rank"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new_list(
            format!("{}[largest]", args.name),
            Field::new_list_field(DataType::Float64, false),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LargestAccumulator {
            largest: Vec::new(),
            rank: rank_of(&args)?,
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(LargestGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
            rank: rank_of(&args)?,
        }))
    }
}

/// Offers `value` to a cell's largest values (sorted from the largest, at
/// most `rank` of them); tells by how many values the cell grew (0 or 1).
fn offer(largest: &mut Vec<f64>, value: f64, rank: usize) -> usize {
    let full = largest.len() >= rank;
    if full {
        // A value equal to the smallest kept one would take a rank past
        // `rank` (row_number gives ties consecutive ranks): keeping either
        // leaves the same values.
        match largest.last() {
            Some(smallest) if value.total_cmp(smallest).is_gt() => {
                largest.pop();
            }
            _ => return 0,
        }
    }
    // After the kept values that are greater or equal, so that equal values
    // are all kept, each at its own rank.
    let at = largest.partition_point(|kept| kept.total_cmp(&value).is_ge());
    largest.insert(at, value);
    usize::from(!full)
}

/// The value of a cell: its `rank`-th largest, if it has that many.
fn value_of(largest: &[f64], rank: usize) -> Option<f64> {
    largest.get(rank - 1).copied()
}

/// The `Float64` values of an argument (coerced by DataFusion's analyzer).
fn values_of(values: &[ArrayRef]) -> Result<&Float64Array> {
    match values
        .first()
        .and_then(|v| v.as_primitive_opt::<Float64Type>())
    {
        Some(array) => Ok(array),
        None => exec_err!("seuil_nth_largest takes Float64 values"),
    }
}

/// The largest values of cells as a list column (the partial state).
fn largest_list<'a>(cells: impl IntoIterator<Item = &'a [f64]>) -> ArrayRef {
    let mut builder = ListBuilder::new(Float64Builder::new())
        .with_field(Field::new_list_field(DataType::Float64, false));
    for largest in cells {
        builder.values().append_slice(largest);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// Calls `each` with the values of each row of a partial state, in order.
fn for_each_state(states: &ArrayRef, mut each: impl FnMut(usize, &[f64])) -> Result<()> {
    let Some(list) = states.as_list_opt::<i32>() else {
        return exec_err!("seuil_nth_largest: a partial state is not a list");
    };
    let Some(values) = list.values().as_primitive_opt::<Float64Type>() else {
        return exec_err!("seuil_nth_largest: a partial state does not hold Float64 values");
    };
    let offsets = list.value_offsets();
    for row in 0..list.len() {
        if list.is_valid(row) {
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            each(row, &values.values()[start..end]);
        }
    }
    Ok(())
}

/// Without GROUP BY: one cell.
#[derive(Debug)]
struct LargestAccumulator {
    largest: Vec<f64>,
    rank: usize,
}

impl Accumulator for LargestAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = values_of(values)?;
        for value in array.iter().flatten() {
            offer(&mut self.largest, value, self.rank);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(value_of(&self.largest, self.rank)))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.largest.capacity() * size_of::<f64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = largest_list([self.largest.as_slice()]);
        Ok(vec![ScalarValue::try_from_array(&list, 0)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (largest, rank) = (&mut self.largest, self.rank);
        for_each_state(&states[0], |_, values| {
            for value in values {
                offer(largest, *value, rank);
            }
        })
    }
}

/// With GROUP BY: the largest values of each cell.
#[derive(Debug)]
struct LargestGroupsAccumulator {
    cells: Vec<Vec<f64>>,
    /// Values held over all cells (for `size`, which must not walk them).
    stored: usize,
    rank: usize,
}

impl GroupsAccumulator for LargestGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let array = values_of(values)?;
        self.cells.resize_with(total_num_groups, Vec::new);
        for (row, &cell) in group_indices.iter().enumerate() {
            if array.is_null(row) || opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            self.stored += offer(&mut self.cells[cell], array.value(row), self.rank);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let cells = self.take(emit_to);
        let values: Float64Array = cells.iter().map(|c| value_of(c, self.rank)).collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let cells = self.take(emit_to);
        Ok(vec![largest_list(cells.iter().map(Vec::as_slice))])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own cell: its value alone, or nothing.
        let array = values_of(values)?;
        let rows = (0..array.len()).map(|row| {
            let kept =
                array.is_valid(row) && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if kept {
                std::slice::from_ref(&array.values()[row])
            } else {
                &[]
            }
        });
        Ok(vec![largest_list(rows)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.cells.resize_with(total_num_groups, Vec::new);
        let (cells, stored, rank) = (&mut self.cells, &mut self.stored, self.rank);
        for_each_state(&values[0], |row, largest| {
            let cell = &mut cells[group_indices[row]];
            for value in largest {
                *stored += offer(cell, *value, rank);
            }
        })
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.cells.capacity() * size_of::<Vec<f64>>()
            + self.stored * size_of::<f64>()
    }
}

impl LargestGroupsAccumulator {
    /// Takes the cells `emit_to` asks for.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<f64>> {
        let cells = emit_to.take_needed(&mut self.cells);
        self.stored -= cells.iter().map(Vec::len).sum::<usize>();
        cells
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::functions::literal_argument::testing::{
        float_cells_context, last_float_column, partial_aggregation_configs,
    };

    /// The values of each cell `g` of the test table, as a cell sees them
    /// (`None` for NULL).
    fn cells() -> Vec<Vec<Option<f64>>> {
        vec![
            // Ties: the two 5s hold ranks 1 and 2.
            vec![Some(5.0), Some(3.0), Some(5.0), Some(1.0)],
            // NULLs never outrank a value.
            vec![None, Some(2.0), None],
            // Only NULLs.
            vec![None, None],
            // Fewer values than most ranks asked for.
            vec![Some(7.0)],
            // Many values, in no order: 0 to 40.
            (0..41).map(|i| Some(f64::from((i * 17) % 41))).collect(),
            // Negative values, and a tie at the bottom.
            vec![Some(-1.0), Some(-3.0), Some(-2.0), Some(-3.0)],
        ]
    }

    fn context(partitions: usize, config: SessionConfig) -> SessionContext {
        float_cells_context(
            &cells(),
            partitions,
            config,
            AggregateUDF::from(NthLargest::new()),
        )
    }

    /// The `n`-th largest of each cell, as the windows the function replaces
    /// computed it.
    fn by_windows(n: usize) -> String {
        format!(
            "SELECT g, max(CASE WHEN r = {n} THEN v END) FROM \
             (SELECT g, v, row_number() OVER (PARTITION BY g ORDER BY v DESC NULLS LAST) AS r \
              FROM t) GROUP BY g ORDER BY g"
        )
    }

    fn by_function(n: usize) -> String {
        format!("SELECT g, seuil_nth_largest(v, {n}) FROM t GROUP BY g ORDER BY g")
    }

    #[tokio::test]
    async fn the_nth_largest_of_each_cell() {
        let expected: [Vec<Option<f64>>; 3] = [
            vec![
                Some(5.0),
                Some(2.0),
                None,
                Some(7.0),
                Some(40.0),
                Some(-1.0),
            ],
            vec![Some(5.0), None, None, None, Some(39.0), Some(-2.0)],
            vec![Some(3.0), None, None, None, Some(38.0), Some(-3.0)],
        ];
        for (name, config) in partial_aggregation_configs() {
            for partitions in [1, 2, 4] {
                let ctx = context(partitions, config.clone());
                for (n, expected) in (1..=3).zip(&expected) {
                    assert_eq!(
                        &last_float_column(&ctx, &by_function(n)).await,
                        expected,
                        "rank {n}, {partitions} partitions, {name}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn the_same_values_as_the_windows_it_replaces() {
        for (name, config) in partial_aggregation_configs() {
            for partitions in [1, 2, 3] {
                let ctx = context(partitions, config.clone());
                for n in 1..=6 {
                    assert_eq!(
                        last_float_column(&ctx, &by_function(n)).await,
                        last_float_column(&ctx, &by_windows(n)).await,
                        "rank {n}, {partitions} partitions, {name}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn one_cell_without_group_by() {
        for partitions in [1, 2, 4] {
            let ctx = context(partitions, SessionConfig::new());
            let all = |n: usize| format!("SELECT seuil_nth_largest(v, {n}) FROM t");
            assert_eq!(last_float_column(&ctx, &all(1)).await, vec![Some(40.0)]);
            assert_eq!(last_float_column(&ctx, &all(3)).await, vec![Some(38.0)]);
            // The cells' 51 non-null values: the smallest is -3, twice.
            assert_eq!(last_float_column(&ctx, &all(50)).await, vec![Some(-3.0)]);
            assert_eq!(last_float_column(&ctx, &all(51)).await, vec![Some(-3.0)]);
            assert_eq!(last_float_column(&ctx, &all(52)).await, vec![None]);
            assert_eq!(
                last_float_column(&ctx, "SELECT seuil_nth_largest(v, 1) FROM t WHERE g = 2").await,
                vec![None],
                "only NULLs"
            );
        }
    }

    #[tokio::test]
    async fn integer_values_are_coerced() {
        let ctx = context(2, SessionConfig::new());
        assert_eq!(
            last_float_column(
                &ctx,
                "SELECT g, seuil_nth_largest(CAST(v AS BIGINT), 2) FROM t GROUP BY g ORDER BY g"
            )
            .await,
            vec![Some(5.0), None, None, None, Some(39.0), Some(-2.0)]
        );
    }

    #[tokio::test]
    async fn the_rank_must_be_a_positive_literal() {
        let ctx = context(1, SessionConfig::new());
        for sql in [
            "SELECT seuil_nth_largest(v, 0) FROM t",
            "SELECT seuil_nth_largest(v, g) FROM t GROUP BY g",
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

    fn floats_array(values: &[Option<f64>]) -> ArrayRef {
        Arc::new(values.iter().copied().collect::<Float64Array>())
    }

    fn as_values(array: &ArrayRef) -> Vec<Option<f64>> {
        array.as_primitive::<Float64Type>().iter().collect()
    }

    #[test]
    fn groups_emit_the_first_cells_and_shift_the_rest() {
        let mut accumulator = LargestGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
            rank: 2,
        };
        let values = floats_array(&[Some(1.0), Some(4.0), Some(2.0), None, Some(4.0), Some(3.0)]);
        let filter = BooleanArray::from(vec![true, true, true, true, true, false]);
        accumulator
            .update_batch(&[values], &[0, 0, 1, 1, 2, 2], Some(&filter), 3)
            .unwrap();
        assert_eq!(accumulator.stored, 4);
        let first = accumulator.evaluate(EmitTo::First(1)).unwrap();
        assert_eq!(as_values(&first), vec![Some(1.0)]);
        assert_eq!(accumulator.stored, 2);
        // Cell 2 (now 1) saw 4 only: 3 was filtered out.
        let rest = accumulator.evaluate(EmitTo::All).unwrap();
        assert_eq!(as_values(&rest), vec![None, None]);
        assert_eq!(accumulator.stored, 0);
    }

    #[test]
    fn states_and_converted_rows_merge() {
        let rank = 2;
        let mut partial = LargestGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
            rank,
        };
        partial
            .update_batch(
                &[floats_array(&[Some(1.0), Some(6.0), Some(6.0), Some(2.0)])],
                &[0, 0, 0, 1],
                None,
                2,
            )
            .unwrap();
        let first = partial.state(EmitTo::First(1)).unwrap();
        let rest = partial.state(EmitTo::All).unwrap();
        let converted = partial
            .convert_to_state(&[floats_array(&[Some(9.0), None, Some(5.0)])], None)
            .unwrap();

        let mut last = LargestGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
            rank,
        };
        last.merge_batch(&first, &[1], 2).unwrap();
        last.merge_batch(&rest, &[0], 2).unwrap();
        last.merge_batch(&converted, &[0, 1, 0], 2).unwrap();
        // Cell 0: 2, 9, 5; cell 1: 1, 6, 6 (a tie at ranks 1 and 2).
        assert_eq!(last.cells, vec![vec![9.0, 5.0], vec![6.0, 6.0]]);
        assert_eq!(
            as_values(&last.evaluate(EmitTo::All).unwrap()),
            vec![Some(5.0), Some(6.0)]
        );
    }

    #[test]
    fn offers_keep_the_largest_values_with_ties() {
        let mut largest = Vec::new();
        for value in [3.0, 1.0, 3.0, 2.0, 3.0, f64::NAN, -0.0, 0.0] {
            offer(&mut largest, value, 3);
        }
        // Arrow's order: NaN above every number.
        assert!(largest[0].is_nan());
        assert_eq!(largest[1..], [3.0, 3.0]);
        let mut small = Vec::new();
        for value in [-0.0, 0.0, -1.0] {
            offer(&mut small, value, 2);
        }
        // 0 above -0, as Arrow sorts them.
        assert_eq!(
            small.iter().map(|v: &f64| v.to_bits()).collect::<Vec<_>>(),
            [0.0_f64.to_bits(), (-0.0_f64).to_bits()]
        );
    }
}
