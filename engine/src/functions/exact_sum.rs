//! Sums of floating-point contributions that do not depend on row order.
//!
//! A cell's released sum (and the total the dominance rules compare its
//! largest persons with) adds the per-person contributions of the cell.
//! DataFusion's `sum` adds them in the order they arrive, and floating-point
//! addition is not associative: the last digits of a sum depend on how rows
//! were split into partitions and batches and on which thread finished
//! first. The `row_number()` windows that used to rank each cell's persons
//! (replaced by [`nth_largest`](mod@super::nth_largest)) sorted every cell's rows before its
//! aggregate, which happened to fix the order; without them the same query
//! could release `491270.51` once and `491270.5099999997` the next time.
//!
//! [`exact_sum`] keeps each cell's sum exactly, as a short list of
//! non-overlapping floating-point partials (Shewchuk's algorithm, as in
//! Python's `math.fsum`), and rounds it once at the end. The exact sum does
//! not depend on the order of the additions, so neither does the rounded
//! one: the same data gives the same released value on any number of
//! partitions, threads or nodes, and partial states merge exactly.
//!
//! Like `sum`, it ignores NULLs, is NULL for a cell without values, and
//! gives `+0.0` rather than `-0.0`. Infinite and NaN contributions give
//! infinite or NaN sums, as with `sum`; so does a sum whose partials
//! overflow `f64` (beyond 1.8e308, far outside any bounded contribution),
//! then whatever the order.

use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Float64Builder, ListBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr::{AggregateFunction, Alias};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility,
};

/// `seuil_exact_sum(value)`: the sum of a cell's non-null `Float64`
/// values, computed exactly and rounded once, so that it does not depend on
/// the order of the rows.
pub fn exact_sum(value: Expr) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(AggregateUDF::from(ExactSum::new())),
        vec![value],
        false,
        None,
        vec![],
        None,
    ))
}

/// `expr` with a call of DataFusion's `sum` of floating-point values
/// replaced by [`exact_sum`] of the same argument and FILTER, under the
/// same output name; anything else as it is. A person's sum then does not
/// depend on how the person's rows were split into partitions and batches,
/// which a file layout (the person index, a node's) decides.
pub fn exact_float_sum(expr: Expr, input: &DFSchema) -> Expr {
    match expr {
        Expr::Alias(alias) => match exact_call(&alias.expr, input) {
            Some(exact) => Expr::Alias(Alias {
                expr: Box::new(exact),
                ..alias
            }),
            None => Expr::Alias(alias),
        },
        other => match exact_call(&other, input) {
            Some(exact) => exact.alias(other.schema_name().to_string()),
            None => other,
        },
    }
}

/// [`exact_sum`] in place of `call`, when it is a `sum` of floating-point values.
fn exact_call(call: &Expr, input: &DFSchema) -> Option<Expr> {
    let Expr::AggregateFunction(call) = call else {
        return None;
    };
    let params = &call.params;
    let floating = matches!(params.args.as_slice(),
        [argument] if argument.get_type(input).is_ok_and(|t| t.is_floating()));
    (call.func.name() == "sum" && !params.distinct && params.order_by.is_empty() && floating).then(
        || {
            Expr::AggregateFunction(AggregateFunction::new_udf(
                Arc::new(AggregateUDF::from(ExactSum::new())),
                params.args.clone(),
                false,
                params.filter.clone(),
                vec![],
                None,
            ))
        },
    )
}

/// The aggregate function behind [`exact_sum`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ExactSum {
    signature: Signature,
}

impl Default for ExactSum {
    fn default() -> Self {
        Self::new()
    }
}

impl ExactSum {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for ExactSum {
    fn name(&self) -> &str {
        "seuil_exact_sum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // Floating-point values only: integers and decimals are summed
        // exactly by `sum` already, and going through f64 would round them.
        match arg_types {
            [value] if value.is_floating() || value.is_null() => Ok(vec![DataType::Float64]),
            _ => plan_err!("seuil_exact_sum takes one floating-point value"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new_list(
                format!("{}[partials]", args.name),
                Field::new_list_field(DataType::Float64, false),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[special]", args.name),
                DataType::Float64,
                false,
            )),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ExactSumAccumulator {
            sum: Sum::default(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(ExactSumGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
        }))
    }
}

/// The exact sum of one cell's values so far (also the exact sums of
/// [`super::person_sums`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Sum {
    /// The finite values' exact sum: non-overlapping partials, by increasing
    /// magnitude.
    partials: Partials,
    /// The sum of the infinite and NaN values (and of overflowed partials):
    /// 0, an infinity or NaN. Adding these is exact and order-free.
    special: f64,
    /// Whether the cell has any non-null value (NULL sum otherwise).
    seen: bool,
}

impl Sum {
    /// Adds a value exactly.
    pub(crate) fn add(&mut self, value: f64) {
        self.seen = true;
        if !value.is_finite() {
            self.special += value;
            return;
        }
        if let Err(infinite) = self.partials.add(value) {
            // Beyond f64: an infinite sum, as `sum` would give.
            self.special += infinite;
            self.partials.clear();
        }
    }

    /// Adds another sum, exactly.
    pub(crate) fn absorb(&mut self, other: &Sum) {
        if other.seen {
            self.merge(other.partials.as_slice(), other.special);
        }
    }

    /// Adds another cell's sum (a partial state), exactly.
    pub(crate) fn merge(&mut self, partials: &[f64], special: f64) {
        self.seen = true;
        self.special += special;
        for partial in partials {
            self.add(*partial);
        }
    }

    /// Values whose exact sum is this sum's: its partials, and the sum of
    /// its infinite and NaN values when there are any (the sum of those
    /// alone does not depend on their order).
    pub(crate) fn parts(&self) -> Vec<f64> {
        let mut parts = self.partials.as_slice().to_vec();
        if self.special != 0.0 {
            parts.push(self.special);
        }
        parts
    }

    /// The sum rounded to the nearest f64 (ties to even), or NULL without
    /// values.
    pub(crate) fn value(&self) -> Option<f64> {
        if !self.seen {
            return None;
        }
        if self.special != 0.0 {
            // An infinity, or NaN (NaN != 0 too).
            return Some(self.special);
        }
        let partials = self.partials.as_slice();
        let mut n = partials.len();
        let mut hi = 0.0;
        if n > 0 {
            // Add from the largest partial down while the sum stays exact.
            n -= 1;
            hi = partials[n];
            let mut lo = 0.0;
            while n > 0 {
                let x = hi;
                n -= 1;
                let y = partials[n];
                hi = x + y;
                lo = y - (hi - x);
                if lo != 0.0 {
                    break;
                }
            }
            // `hi` was rounded half to even on `lo` alone: when the partials
            // below push `lo` past the halfway point, round the other way.
            if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0))
            {
                let y = lo * 2.0;
                let x = hi + y;
                if y == x - hi {
                    hi = x;
                }
            }
        }
        // As `sum` starts from +0.0: no -0.0.
        Some(hi + 0.0)
    }
}

/// Non-overlapping partials, by increasing magnitude: the first two in
/// place (most sums never need more, and a cell's sum then costs no
/// allocation), all of them on the heap beyond.
#[derive(Debug, Default, Clone, PartialEq)]
struct Partials {
    inline: [f64; 2],
    len: usize,
    /// Every partial, when there are more than two.
    heap: Vec<f64>,
}

impl Partials {
    fn as_slice(&self) -> &[f64] {
        if self.len > 2 {
            &self.heap
        } else {
            &self.inline[..self.len]
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn heap_capacity(&self) -> usize {
        self.heap.capacity()
    }

    fn clear(&mut self) {
        self.len = 0;
        self.heap.clear();
    }

    /// Adds `x` exactly (Shewchuk's grow-expansion); the infinite sum when
    /// it overflows.
    fn add(&mut self, x: f64) -> Result<(), f64> {
        if self.len > 2 {
            self.heap.push(0.0);
            let len = grow(&mut self.heap, self.len, x)?;
            self.heap.truncate(len);
            if len <= 2 {
                self.inline[..len].copy_from_slice(&self.heap);
                self.heap.clear();
            }
            self.len = len;
            return Ok(());
        }
        let mut buffer = [self.inline[0], self.inline[1], 0.0];
        let len = grow(&mut buffer, self.len, x)?;
        if len > 2 {
            self.heap.clear();
            self.heap.extend_from_slice(&buffer);
        } else {
            self.inline = [buffer[0], buffer[1]];
        }
        self.len = len;
        Ok(())
    }
}

/// Adds `x` to the `len` partials at the start of `buffer` (which has room
/// for one more), leaving the new partials there; their number, or the
/// infinite sum when it overflows.
fn grow(buffer: &mut [f64], len: usize, x: f64) -> Result<usize, f64> {
    let mut x = x;
    let mut kept = 0;
    for j in 0..len {
        let mut y = buffer[j];
        if x.abs() < y.abs() {
            std::mem::swap(&mut x, &mut y);
        }
        let hi = x + y;
        if !hi.is_finite() {
            return Err(hi);
        }
        // `hi + lo` is exactly `x + y`.
        let lo = y - (hi - x);
        if lo != 0.0 {
            buffer[kept] = lo;
            kept += 1;
        }
        x = hi;
    }
    buffer[kept] = x;
    Ok(kept + 1)
}

/// The `Float64` values of an argument (coerced by DataFusion's analyzer).
fn values_of(values: &[ArrayRef]) -> Result<&Float64Array> {
    match values
        .first()
        .and_then(|v| v.as_primitive_opt::<Float64Type>())
    {
        Some(array) => Ok(array),
        None => exec_err!("seuil_exact_sum takes Float64 values"),
    }
}

/// Sums as the partial state: their partials (NULL for a sum without
/// values) and their special values.
fn state_of<'a>(sums: impl IntoIterator<Item = &'a Sum>) -> Vec<ArrayRef> {
    let mut partials = ListBuilder::new(Float64Builder::new())
        .with_field(Field::new_list_field(DataType::Float64, false));
    let mut specials = Float64Builder::new();
    for sum in sums {
        partials.values().append_slice(sum.partials.as_slice());
        partials.append(sum.seen);
        specials.append_value(sum.special);
    }
    vec![Arc::new(partials.finish()), Arc::new(specials.finish())]
}

/// Calls `each` with the partials and special value of each row of a
/// partial state that has values.
fn for_each_state(states: &[ArrayRef], mut each: impl FnMut(usize, &[f64], f64)) -> Result<()> {
    let (Some(list), Some(specials)) = (
        states.first().and_then(|s| s.as_list_opt::<i32>()),
        states
            .get(1)
            .and_then(|s| s.as_primitive_opt::<Float64Type>()),
    ) else {
        return exec_err!("seuil_exact_sum: a partial state is not partials and a special value");
    };
    let Some(values) = list.values().as_primitive_opt::<Float64Type>() else {
        return exec_err!("seuil_exact_sum: a partial state does not hold Float64 partials");
    };
    let offsets = list.value_offsets();
    for row in 0..list.len() {
        if list.is_valid(row) {
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            each(row, &values.values()[start..end], specials.value(row));
        }
    }
    Ok(())
}

/// Without GROUP BY: one cell.
#[derive(Debug)]
struct ExactSumAccumulator {
    sum: Sum,
}

impl Accumulator for ExactSumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in values_of(values)?.iter().flatten() {
            self.sum.add(value);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.sum.value()))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.sum.partials.heap_capacity() * size_of::<f64>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        state_of([&self.sum])
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sum = &mut self.sum;
        for_each_state(states, |_, partials, special| {
            sum.merge(partials, special);
        })
    }
}

/// With GROUP BY: the exact sum of each cell.
#[derive(Debug)]
struct ExactSumGroupsAccumulator {
    cells: Vec<Sum>,
    /// Partials held over all cells (for `size`, which must not walk them).
    stored: usize,
}

impl GroupsAccumulator for ExactSumGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let array = values_of(values)?;
        self.cells.resize_with(total_num_groups, Sum::default);
        for (row, &cell) in group_indices.iter().enumerate() {
            if array.is_null(row) || opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            let sum = &mut self.cells[cell];
            let before = sum.partials.len();
            sum.add(array.value(row));
            self.stored = self.stored - before + sum.partials.len();
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let cells = self.take(emit_to);
        let values: Float64Array = cells.iter().map(Sum::value).collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let cells = self.take(emit_to);
        Ok(state_of(&cells))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own cell: the sum of its value alone, or no value.
        let array = values_of(values)?;
        let rows: Vec<Sum> = (0..array.len())
            .map(|row| {
                let mut sum = Sum::default();
                if array.is_valid(row) && opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row))
                {
                    sum.add(array.value(row));
                }
                sum
            })
            .collect();
        Ok(state_of(&rows))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.cells.resize_with(total_num_groups, Sum::default);
        let (cells, stored) = (&mut self.cells, &mut self.stored);
        for_each_state(values, |row, partials, special| {
            let sum = &mut cells[group_indices[row]];
            let before = sum.partials.len();
            sum.merge(partials, special);
            *stored = *stored - before + sum.partials.len();
        })
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.cells.capacity() * size_of::<Sum>()
            + self.stored * size_of::<f64>()
    }
}

impl ExactSumGroupsAccumulator {
    /// Takes the cells `emit_to` asks for.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Sum> {
        let cells = emit_to.take_needed(&mut self.cells);
        self.stored -= cells.iter().map(|c| c.partials.len()).sum::<usize>();
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

    fn sum_of(values: &[f64]) -> Option<f64> {
        let mut sum = Sum::default();
        for value in values {
            sum.add(*value);
        }
        sum.value()
    }

    /// Known exact sums, from the tests of Python's `math.fsum`, including
    /// the ones where rounding the largest partials alone rounds the wrong
    /// way.
    fn known_sums() -> Vec<(Vec<f64>, f64)> {
        let two = |e: i32| 2f64.powi(e);
        vec![
            (vec![0.0], 0.0),
            (vec![1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50], 1e-100),
            (vec![two(53), -0.5, -two(-54)], two(53) - 1.0),
            (vec![two(53), 1.0, two(-100)], two(53) + 2.0),
            (vec![two(53) + 10.0, 1.0, two(-100)], two(53) + 12.0),
            (vec![two(53) - 4.0, 0.5, two(-54)], two(53) - 3.0),
            (
                (1..=1000).map(|n| 1.0 / f64::from(n)).collect(),
                // 0x1.df11f45f4e61ap+2
                f64::from_bits(0x401d_f11f_45f4_e61a),
            ),
            (
                (1..=1000).map(|n| (-1f64).powi(n) / f64::from(n)).collect(),
                // -0x1.62a2af1bd3624p-1
                f64::from_bits(0xbfe6_2a2a_f1bd_3624),
            ),
            (vec![1e16, 1.0, 1e-16], 10000000000000002.0),
            (
                vec![1e16 - 2.0, 1.0 - two(-53), -(1e16 - 2.0), -(1.0 - two(-53))],
                0.0,
            ),
            (vec![0.1; 10], 1.0),
        ]
    }

    #[test]
    fn sums_are_exact_then_rounded_once() {
        for (values, expected) in known_sums() {
            assert_eq!(sum_of(&values), Some(expected), "{values:?}");
            let mut reversed = values.clone();
            reversed.reverse();
            assert_eq!(sum_of(&reversed), Some(expected), "{reversed:?}");
        }
        // A plain sum of the same values depends on their order.
        assert_ne!([1e16, 1.0, -1e16].iter().sum::<f64>(), 1.0);
        assert_eq!(sum_of(&[1e16, 1.0, -1e16]), Some(1.0));
    }

    #[test]
    fn special_values_and_empty_sums() {
        assert_eq!(sum_of(&[]), None);
        let zero = sum_of(&[-0.0, -0.0]).unwrap();
        assert_eq!(zero.to_bits(), 0.0_f64.to_bits(), "+0.0, as sum gives");
        assert_eq!(sum_of(&[1.0, f64::INFINITY]), Some(f64::INFINITY));
        assert_eq!(sum_of(&[f64::NEG_INFINITY, 1.0]), Some(f64::NEG_INFINITY));
        assert!(
            sum_of(&[f64::INFINITY, f64::NEG_INFINITY])
                .unwrap()
                .is_nan()
        );
        assert!(sum_of(&[1.0, f64::NAN, 2.0]).unwrap().is_nan());
        assert_eq!(sum_of(&[f64::MAX, f64::MAX]), Some(f64::INFINITY));
    }

    /// The values of each cell `g` of the test table: sums that a plain sum
    /// gets wrong in some orders, and NULLs.
    fn cells() -> Vec<Vec<Option<f64>>> {
        vec![
            (1..=1000).map(|n| Some(1.0 / f64::from(n))).collect(),
            (0..300)
                .map(|i| Some([1e16, 1.0, -1e16, 0.1][i % 4]))
                .collect(),
            vec![None, Some(2.5), None],
            vec![None],
        ]
    }

    fn context(partitions: usize, config: SessionConfig) -> SessionContext {
        float_cells_context(
            &cells(),
            partitions,
            config,
            AggregateUDF::from(ExactSum::new()),
        )
    }

    #[tokio::test]
    async fn the_same_sums_on_any_partitioning() {
        let exact = |values: &[Option<f64>]| {
            let values: Vec<f64> = values.iter().flatten().copied().collect();
            sum_of(&values)
        };
        let expected: Vec<Option<f64>> = cells().iter().map(|c| exact(c)).collect();
        // 1/1 + ... + 1/1000, as `math.fsum` gives it.
        assert_eq!(expected[0], Some(f64::from_bits(0x401d_f11f_45f4_e61a)));
        assert_eq!(expected[2..], [Some(2.5), None]);
        let everything = exact(&cells().concat());
        for (_, config) in partial_aggregation_configs() {
            for partitions in [1, 2, 3, 4] {
                let ctx = context(partitions, config.clone());
                assert_eq!(
                    last_float_column(
                        &ctx,
                        "SELECT g, seuil_exact_sum(v) FROM t GROUP BY g ORDER BY g"
                    )
                    .await,
                    expected,
                    "{partitions} partitions"
                );
                assert_eq!(
                    last_float_column(&ctx, "SELECT seuil_exact_sum(v) FROM t").await,
                    vec![everything],
                    "{partitions} partitions, without GROUP BY"
                );
            }
        }
    }

    #[test]
    fn groups_emit_and_merge_states() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1e16),
            Some(1.0),
            None,
            Some(f64::INFINITY),
            Some(-1e16),
            Some(2.0),
        ]));
        let mut partial = ExactSumGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
        };
        partial
            .update_batch(&[Arc::clone(&values)], &[0, 0, 1, 2, 0, 3], None, 4)
            .unwrap();
        assert_eq!(
            partial.stored,
            partial
                .cells
                .iter()
                .map(|c| c.partials.len())
                .sum::<usize>()
        );
        let first = partial.state(EmitTo::First(2)).unwrap();
        let rest = partial.state(EmitTo::All).unwrap();
        assert_eq!(partial.stored, 0);
        let converted = partial.convert_to_state(&[values], None).unwrap();

        let mut last = ExactSumGroupsAccumulator {
            cells: Vec::new(),
            stored: 0,
        };
        // Cells 0 and 1, then 2 and 3 (as 0 and 1 after the first two were
        // emitted), then each row on its own, all into two cells.
        last.merge_batch(&first, &[0, 1], 2).unwrap();
        last.merge_batch(&rest, &[1, 0], 2).unwrap();
        last.merge_batch(&converted, &[0, 0, 1, 1, 0, 1], 2)
            .unwrap();
        // Cell 0: (1e16 + 1 - 1e16) + 2 + 1e16 + 1 - 1e16; cell 1: no
        // value, infinity, then NULL, infinity and 2.
        let sums = last.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            sums.as_primitive::<Float64Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(4.0), Some(f64::INFINITY)]
        );
    }

    #[tokio::test]
    async fn only_floating_point_values() {
        let ctx = context(1, SessionConfig::new());
        let error = ctx
            .sql("SELECT seuil_exact_sum(g) FROM t")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("floating-point"), "{error}");
        assert_eq!(
            last_float_column(
                &ctx,
                "SELECT seuil_exact_sum(CAST(v AS FLOAT)) FROM t WHERE g = 2"
            )
            .await,
            vec![Some(2.5)]
        );
    }
}
