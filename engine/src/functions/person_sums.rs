//! A cell's sum of a sensitive column with each person's contribution
//! clamped to the column's bounds, and its largest contributions, computed
//! over the cell's rows in one aggregate (rule 6).
//!
//! A released sum of a sensitive column adds, over the persons of its cell,
//! each person's own sum clamped to the bounds; the dominance rules compare
//! it with its largest per-person contributions. As a plan of DataFusion's
//! aggregates that is two levels: per (cell, person), then per cell. On a
//! million persons the first level has some fifteen million groups, hashed
//! on the cell's keys and the person, and it cost ten times the query
//! without the policy.
//!
//! [`person_sums`] needs no per-person level. Each cell keeps the *runs* of
//! its rows: consecutive rows of one person add into one run, so a cell's
//! state is a list of (person, partial sum) that grows by one entry when the
//! person changes. The keyed tables of the person index are written sorted
//! by person ([`crate::person_index`]), so a scan brings each person's rows
//! together and in person order: a run is then a person, and the list is
//! already sorted. When the cell is evaluated, the runs are sorted by person
//! if they are not (rows that came in another order, partial states merged
//! from several partitions), the runs of one person are combined, each
//! person's sum is clamped, and the clamped contributions are added and
//! ranked. The result does not depend on the order of the rows: the order
//! only decides how much sorting is left for the end.
//!
//! The value is a struct:
//!
//! - `sum`: the sum of the clamped contributions, `Float64` for a
//!   floating-point column (added exactly, as [`exact_sum`](mod@super::exact_sum) does) and
//!   `Int64` for an integer one (wrapping, as `sum` does); NULL for a cell
//!   without values;
//! - `top1` ... `topN`: the largest, second largest, ... contributions as
//!   `Float64`, ties counted apart, NULL beyond the cell's persons (as
//!   [`nth_largest`](mod@super::nth_largest) gives them).
//!
//! Clamping is the cells plan's, value for value: a contribution below the
//! lower bound becomes the lower bound, above the upper bound the upper
//! bound; an integer contribution is compared and clamped as `Float64`,
//! then truncated back to an integer. NULL values and filtered rows are not
//! part of any person's sum, and a person without values contributes
//! nothing. A person's floating-point sum is exact and rounded once (a run
//! is two doubles whose sum is exactly the run's, and the runs of one
//! person are combined exactly), so it does not depend on how the person's
//! rows were split over batches, partitions or partial states.
//!
//! **Rows in person order.** Over a scan of a keyed table whose partitions
//! are byte ranges of its one file, in order, a partition's rows come person
//! by person, and a person is in no other partition except at the
//! partition's edges. [`in_person_order`] marks a call that reads such rows
//! (the planner's [`crate::contributions::ordered_sums`] rule decides it).
//! Each cell then *closes* a person as soon as its next person comes: the
//! person's sum is clamped, added to the cell's closed total and ranked
//! among its closed largest contributions, and no run is kept. Only the
//! partition's first and last persons stay runs, as they may go on in the
//! neighbouring partitions. A partial state carries, besides its runs, the
//! closed total (as exact parts), the closed largest contributions and the
//! ranges of the closed persons. Nothing is trusted: a partition whose
//! persons go down fails the query, and so does a merge in which one
//! state's closed persons could meet another state's persons (ranges that
//! overlap, or a run inside a closed range), rather than count a person
//! twice. The values are the same, value for value, as without the order:
//! exact totals add in any order, and largest contributions merge.

use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, ListBuilder, PrimitiveArray,
    PrimitiveBuilder, StructArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, FieldRef, Fields, Float64Type, Int64Type, UInt32Type,
};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility, lit,
};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;

use super::exact_sum::Sum;

/// The argument that says whether the rows come in person order: a
/// Boolean literal, false as [`person_sums`] writes it.
const IN_PERSON_ORDER: usize = 4;

/// The name of the struct field holding the clamped sum.
pub const SUM_FIELD: &str = "sum";

/// The name of the struct field holding the `rank`-th largest contribution.
pub fn top_field(rank: usize) -> String {
    format!("top{rank}")
}

/// `seuil_person_sums(person, value, lower, upper)` with its `largest`
/// contributions: the clamped sum of `value` over the persons of a cell
/// and its `largest` largest per-person contributions (see the module's
/// documentation), over the rows `filter` keeps. `person` is a `UInt32`
/// person number; `value` an integer or floating-point expression.
pub fn person_sums(
    person: Expr,
    value: Expr,
    (lower, upper): (f64, f64),
    largest: usize,
    filter: Option<Expr>,
) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(AggregateUDF::from(PersonSums::new(largest))),
        vec![person, value, lit(lower), lit(upper), lit(false)],
        false,
        filter.map(Box::new),
        vec![],
        None,
    ))
}

/// `aggregate` reading rows that come in person order (see the module's
/// documentation), or `None` when it is not a call of [`person_sums`].
pub fn in_person_order(aggregate: &AggregateFunctionExpr) -> Option<AggregateFunctionExpr> {
    if aggregate.fun().name() != PersonSums::NAME {
        return None;
    }
    let mut args = aggregate.expressions();
    *args.get_mut(IN_PERSON_ORDER)? = Arc::new(Literal::new(ScalarValue::Boolean(Some(true))));
    let order_bys = aggregate
        .order_bys()
        .iter()
        .map(|sort| Arc::clone(&sort.expr))
        .collect();
    aggregate.with_new_expressions(args, order_bys)
}

/// The aggregate function behind [`person_sums`], for one number of
/// largest contributions (part of its return type, so part of the
/// function).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PersonSums {
    signature: Signature,
    largest: usize,
}

impl Default for PersonSums {
    fn default() -> Self {
        Self::new(0)
    }
}

impl PersonSums {
    /// The function's name in plans.
    pub const NAME: &'static str = "seuil_person_sums";

    /// The function giving the `largest` largest contributions.
    pub fn new(largest: usize) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            largest,
        }
    }

    /// How many largest contributions it gives.
    pub fn largest(&self) -> usize {
        self.largest
    }
}

/// The fields of the function's struct: the sum, then the largest
/// contributions.
fn struct_fields(sum_type: &DataType, largest: usize) -> Fields {
    let mut fields = vec![Field::new(SUM_FIELD, sum_type.clone(), true)];
    fields.extend((1..=largest).map(|r| Field::new(top_field(r), DataType::Float64, true)));
    Fields::from(fields)
}

/// The bounds of a call: its third and fourth arguments, `Float64` literals.
fn bounds_of(args: &AccumulatorArgs) -> Result<(f64, f64)> {
    let literal = |i: usize| {
        args.exprs
            .get(i)
            .and_then(|e| e.downcast_ref::<Literal>())
            .map(Literal::value)
    };
    match (literal(2), literal(3)) {
        (Some(ScalarValue::Float64(Some(lower))), Some(ScalarValue::Float64(Some(upper)))) => {
            Ok((*lower, *upper))
        }
        _ => exec_err!("seuil_person_sums takes its bounds as Float64 literals"),
    }
}

/// Whether a call reads rows in person order: its fifth argument.
fn reads_in_person_order(args: &AccumulatorArgs) -> Result<bool> {
    match args
        .exprs
        .get(IN_PERSON_ORDER)
        .and_then(|e| e.downcast_ref::<Literal>())
        .map(Literal::value)
    {
        Some(ScalarValue::Boolean(Some(ordered))) => Ok(*ordered),
        _ => exec_err!("seuil_person_sums takes whether rows come in person order as a literal"),
    }
}

/// Whether a call sums integers (its `sum` field is `Int64`) rather than
/// floating-point values.
fn sums_integers(args: &AccumulatorArgs) -> bool {
    matches!(args.return_field.data_type(), DataType::Struct(fields)
        if fields.first().is_some_and(|f| f.data_type() == &DataType::Int64))
}

impl AggregateUDFImpl for PersonSums {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let value = match arg_types.get(1) {
            Some(t) if t.is_integer() => DataType::Int64,
            Some(t) if t.is_floating() || t.is_null() => DataType::Float64,
            _ => return plan_err!("seuil_person_sums sums an integer or floating-point value"),
        };
        match arg_types {
            [DataType::UInt32, _, lower, upper, DataType::Boolean]
                if lower.is_numeric() && upper.is_numeric() =>
            {
                Ok(vec![
                    DataType::UInt32,
                    value,
                    DataType::Float64,
                    DataType::Float64,
                    DataType::Boolean,
                ])
            }
            _ => plan_err!(
                "seuil_person_sums takes a UInt32 person number, a value, two numeric bounds \
                 and whether rows come in person order"
            ),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.get(1) {
            Some(sum_type @ (DataType::Int64 | DataType::Float64)) => {
                Ok(DataType::Struct(struct_fields(sum_type, self.largest)))
            }
            _ => plan_err!("seuil_person_sums sums Int64 or Float64 values"),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let value_type = args
            .input_fields
            .get(1)
            .map_or(DataType::Float64, |f| f.data_type().clone());
        let list = |name: &str, data_type: &DataType| {
            Arc::new(Field::new_list(
                format!("{}[{name}]", args.name),
                Field::new_list_field(data_type.clone(), false),
                false,
            ))
        };
        Ok(vec![
            list("persons", &DataType::UInt32),
            list("highs", &value_type),
            list("lows", &value_type),
            list("closed from", &DataType::UInt32),
            list("closed to", &DataType::UInt32),
            list("closed total", &value_type),
            list("closed top", &DataType::Float64),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let limits = Limits {
            bounds: bounds_of(&args)?,
            largest: self.largest,
        };
        let ordered = reads_in_person_order(&args)?;
        Ok(if sums_integers(&args) {
            Box::new(OneCell(Cells::<i64>::new(limits, ordered)))
        } else {
            Box::new(OneCell(Cells::<f64>::new(limits, ordered)))
        })
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let limits = Limits {
            bounds: bounds_of(&args)?,
            largest: self.largest,
        };
        let ordered = reads_in_person_order(&args)?;
        Ok(if sums_integers(&args) {
            Box::new(Cells::<i64>::new(limits, ordered))
        } else {
            Box::new(Cells::<f64>::new(limits, ordered))
        })
    }
}

/// What a person's contribution is: the column's number type, how a run
/// of one person's rows adds up, and how contributions clamp and total.
trait Contribution:
    Copy + Send + Sync + std::fmt::Debug + datafusion::arrow::datatypes::ArrowNativeType + 'static
{
    type Arrow: ArrowPrimitiveType<Native = Self> + std::fmt::Debug;
    /// The exact sum of a run's rows so far.
    type Run: Copy + Send + Sync + std::fmt::Debug + 'static;
    /// The cell's total of clamped contributions being added.
    type Total: Default + Send + Sync + std::fmt::Debug;

    fn data_type() -> DataType;
    fn run(value: Self) -> Self::Run;
    /// Adds a row's value to a run, exactly; false when the run cannot hold
    /// the exact sum (the value then starts a run of its own).
    fn add_exactly(run: &mut Self::Run, value: Self) -> bool;
    /// Two values whose exact sum is the run's, for a partial state.
    fn parts(run: Self::Run) -> (Self, Self);
    /// The run of two such values.
    fn from_parts(high: Self, low: Self) -> Self::Run;
    /// The sum of one person's runs, rounded once.
    fn combine(runs: &[(u32, Self::Run)]) -> Self;
    /// The contribution clamped to the bounds, or none when the clamped
    /// value has no representation in the type.
    fn clamp(self, lower: f64, upper: f64) -> Option<Self>;
    fn to_f64(self) -> f64;
    fn add_to(self, total: &mut Self::Total);
    fn total(total: &Self::Total) -> Option<Self>;
    /// Values whose exact sum is the total's, for a partial state of a cell
    /// that closed persons.
    fn total_parts(total: &Self::Total) -> Vec<Self>;
    /// Adds a partial state's parts of a total of closed persons.
    fn absorb_parts(total: &mut Self::Total, parts: &[Self]);
}

/// The clamp of the cells plan: `CASE WHEN v < lower THEN lower WHEN v >
/// upper THEN upper ELSE v END`, NaN left as it is.
fn clamp_f64(value: f64, lower: f64, upper: f64) -> f64 {
    if value < lower {
        lower
    } else if value > upper {
        upper
    } else {
        value
    }
}

/// `a + b` as the rounded sum and its rounding error (Knuth's TwoSum).
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let sum = a + b;
    let b_virtual = sum - a;
    let a_virtual = sum - b_virtual;
    (sum, (a - a_virtual) + (b - b_virtual))
}

/// A floating-point run is kept as two doubles whose exact sum is the exact
/// sum of its rows: a row's value goes into the high part with TwoSum, and
/// the rounding error into the low part, when that addition is exact too.
/// A person's sum then does not depend on how the person's rows were split
/// into runs, batches or partitions.
impl Contribution for f64 {
    type Arrow = Float64Type;
    type Run = (f64, f64);
    type Total = Sum;

    fn data_type() -> DataType {
        DataType::Float64
    }

    fn run(value: Self) -> (f64, f64) {
        (value, 0.0)
    }

    fn add_exactly(run: &mut (f64, f64), value: Self) -> bool {
        let (high, error) = two_sum(run.0, value);
        let (low, lost) = two_sum(run.1, error);
        if lost != 0.0 || !high.is_finite() || !low.is_finite() {
            return false;
        }
        *run = (high, low);
        true
    }

    fn parts(run: (f64, f64)) -> (f64, f64) {
        run
    }

    fn from_parts(high: f64, low: f64) -> (f64, f64) {
        (high, low)
    }

    fn combine(runs: &[(u32, (f64, f64))]) -> Self {
        // Most persons have one run, or runs whose sum two doubles still
        // hold exactly: one addition then rounds it.
        let mut exact = (0.0, 0.0);
        if runs.iter().all(|(_, (high, low))| {
            Self::add_exactly(&mut exact, *high) && Self::add_exactly(&mut exact, *low)
        }) {
            return exact.0 + exact.1;
        }
        let mut sum = Sum::default();
        for (_, (high, low)) in runs {
            sum.add(*high);
            sum.add(*low);
        }
        sum.value().unwrap_or(0.0)
    }

    fn clamp(self, lower: f64, upper: f64) -> Option<Self> {
        Some(clamp_f64(self, lower, upper))
    }

    fn to_f64(self) -> f64 {
        self
    }

    fn add_to(self, total: &mut Sum) {
        total.add(self);
    }

    fn total(total: &Sum) -> Option<Self> {
        total.value()
    }

    fn total_parts(total: &Sum) -> Vec<Self> {
        total.parts()
    }

    fn absorb_parts(total: &mut Sum, parts: &[Self]) {
        // Each closed person contributed: the total has values even when
        // they cancel out to no parts.
        total.merge(parts, 0.0);
    }
}

impl Contribution for i64 {
    type Arrow = Int64Type;
    type Run = i64;
    /// Whether any contribution was added, and their wrapping sum.
    type Total = Option<i64>;

    fn data_type() -> DataType {
        DataType::Int64
    }

    fn run(value: Self) -> i64 {
        value
    }

    fn add_exactly(run: &mut i64, value: Self) -> bool {
        // As `sum` adds integers.
        *run = run.wrapping_add(value);
        true
    }

    fn parts(run: i64) -> (i64, i64) {
        (run, 0)
    }

    fn from_parts(high: i64, low: i64) -> i64 {
        high.wrapping_add(low)
    }

    fn combine(runs: &[(u32, i64)]) -> Self {
        runs.iter().fold(0i64, |sum, (_, p)| sum.wrapping_add(*p))
    }

    fn clamp(self, lower: f64, upper: f64) -> Option<Self> {
        // As the cells plan's CASE, in Float64, then a TRY_CAST back: NULL
        // (no contribution) where the clamped value is not an Int64.
        let clamped = clamp_f64(self as f64, lower, upper);
        (clamped.is_finite() && clamped >= i64::MIN as f64 && clamped < i64::MAX as f64)
            .then(|| clamped.trunc() as i64)
    }

    fn to_f64(self) -> f64 {
        self as f64
    }

    fn add_to(self, total: &mut Option<i64>) {
        *total = Some(total.unwrap_or(0).wrapping_add(self));
    }

    fn total(total: &Option<i64>) -> Option<Self> {
        *total
    }

    fn total_parts(total: &Option<i64>) -> Vec<Self> {
        total.iter().copied().collect()
    }

    fn absorb_parts(total: &mut Option<i64>, parts: &[Self]) {
        // Closed persons whose clamped sums are not integers contributed
        // nothing: no part.
        for part in parts {
            part.add_to(total);
        }
    }
}

/// The persons a partition's cells must not close: its first person, and
/// the person it was reading when it gave a state early. Either may have
/// rows elsewhere (the previous partition, or the rows after the state).
type Edges = Vec<u32>;

/// What a cell has closed (rows in person order only): the total of the
/// closed contributions, the largest of them, and the ranges of the persons
/// closed, its own and its merged states'.
#[derive(Debug)]
struct Closed<T: Contribution> {
    total: T::Total,
    /// At most `largest`, in decreasing order ([`f64::total_cmp`]).
    top: Vec<f64>,
    /// The range of the persons this cell closed itself.
    own: Option<(u32, u32)>,
    /// The ranges of the persons that merged partial states closed.
    merged: Vec<(u32, u32)>,
}

impl<T: Contribution> Default for Closed<T> {
    fn default() -> Self {
        Self {
            total: T::Total::default(),
            top: Vec::new(),
            own: None,
            merged: Vec::new(),
        }
    }
}

impl<T: Contribution> Closed<T> {
    /// Every range of closed persons.
    fn ranges(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.own.iter().copied().chain(self.merged.iter().copied())
    }

    /// Ends the range of the persons closed so far: the next ones are
    /// beyond a new edge person, which must not fall inside a range.
    fn end_range(&mut self) {
        if let Some(range) = self.own.take() {
            self.merged.push(range);
        }
    }
}

/// Ranks `value` among the `largest` largest kept in `top`: ties go after
/// the equal values already kept, so that ranks of equal contributions are
/// counted apart.
fn rank(top: &mut Vec<f64>, value: f64, largest: usize) {
    if top.len() < largest || top.last().is_some_and(|l| value.total_cmp(l).is_gt()) {
        let at = top.partition_point(|kept| kept.total_cmp(&value).is_ge());
        top.insert(at, value);
        top.truncate(largest);
    }
}

/// One cell's runs: (person, exact sum of a run of the person's rows), in
/// the order they came, and what it closed when rows come in person order.
#[derive(Debug)]
struct Runs<T: Contribution> {
    runs: Vec<(u32, T::Run)>,
    /// Whether the persons of `runs` never decrease.
    sorted: bool,
    /// The runs of partial states merged into the cell, where they are in
    /// the states' arrays (slices share their buffers: nothing is copied).
    segments: Vec<Segment<T>>,
    /// In person order: where the runs of the cell's current person begin
    /// in `runs` (the runs before it are edge persons').
    current: usize,
    closed: Closed<T>,
}

impl<T: Contribution> Default for Runs<T> {
    fn default() -> Self {
        Self {
            runs: Vec::new(),
            sorted: true,
            segments: Vec::new(),
            current: 0,
            closed: Closed::default(),
        }
    }
}

/// The runs of one row of a partial state: persons, and the two parts of
/// each run.
#[derive(Debug)]
struct Segment<T: Contribution> {
    persons: UInt32Array,
    highs: PrimitiveArray<T::Arrow>,
    lows: PrimitiveArray<T::Arrow>,
}

/// What one row of a partial state closed: the ranges of its closed
/// persons (first and last of each), the exact parts of their total, and
/// their largest contributions.
struct ClosedState<'a, T: Contribution> {
    from: &'a [u32],
    to: &'a [u32],
    total: &'a [T],
    top: &'a [f64],
}

/// Where a cell's runs come from when it is finished: its own, in order,
/// or a partial state's.
enum Source<'a, T: Contribution> {
    Own(&'a [(u32, T::Run)]),
    State(&'a [u32], &'a [T], &'a [T]),
}

impl<T: Contribution> Source<'_, T> {
    fn len(&self) -> usize {
        match self {
            Source::Own(runs) => runs.len(),
            Source::State(persons, ..) => persons.len(),
        }
    }

    fn person(&self, i: usize) -> u32 {
        match self {
            Source::Own(runs) => runs[i].0,
            Source::State(persons, ..) => persons[i],
        }
    }

    fn run(&self, i: usize) -> T::Run {
        match self {
            Source::Own(runs) => runs[i].1,
            Source::State(_, highs, lows) => T::from_parts(highs[i], lows[i]),
        }
    }
}

/// The bounds of a cell's contributions and how many largest it ranks.
#[derive(Debug, Clone, Copy)]
struct Limits {
    bounds: (f64, f64),
    largest: usize,
}

impl<T: Contribution> Runs<T> {
    /// Adds a row: to the last run when it is the same person's.
    fn add_row(&mut self, person: u32, value: T) {
        if let Some((last, run)) = self.runs.last_mut()
            && *last == person
            && T::add_exactly(run, value)
        {
            return;
        }
        self.add_run(person, value);
    }

    /// Adds a row's value as a run of its own: a person's runs are
    /// combined exactly at the end.
    fn add_run(&mut self, person: u32, value: T) {
        if self.runs.last().is_some_and(|(p, _)| *p > person) {
            self.sorted = false;
        }
        self.runs.push((person, T::run(value)));
    }

    /// Adds a row of rows that come in person order: a new person closes
    /// the cell's current one. Returns the change in the number of runs.
    fn add_row_in_order(&mut self, person: u32, value: T, edges: &[u32], limits: Limits) -> isize {
        let before = self.runs.len();
        if self
            .runs
            .get(self.current)
            .is_some_and(|(p, _)| *p != person)
        {
            self.close_current(edges, limits);
            self.current = self.runs.len();
        }
        self.add_row(person, value);
        self.runs.len() as isize - before as isize
    }

    /// Closes the cell's current person (all its rows of the partition have
    /// come), unless it is an edge person, whose runs stay.
    fn close_current(&mut self, edges: &[u32], limits: Limits) {
        let Some(&(person, _)) = self.runs.get(self.current) else {
            return;
        };
        if edges.contains(&person) {
            self.current = self.runs.len();
            return;
        }
        let contribution =
            T::combine(&self.runs[self.current..]).clamp(limits.bounds.0, limits.bounds.1);
        self.runs.truncate(self.current);
        let closed = &mut self.closed;
        closed.own = Some(
            closed
                .own
                .map_or((person, person), |(from, _)| (from, person)),
        );
        if let Some(contribution) = contribution {
            contribution.add_to(&mut closed.total);
            if limits.largest > 0 {
                rank(&mut closed.top, contribution.to_f64(), limits.largest);
            }
        }
    }

    /// Adds the runs of a partial state's row, where they are.
    fn add_segment(&mut self, segment: Segment<T>) {
        if !segment.persons.is_empty() {
            self.segments.push(segment);
        }
    }

    /// Adds what a partial state's row closed.
    fn add_closed(&mut self, state: ClosedState<'_, T>, largest: usize) {
        let closed = &mut self.closed;
        closed
            .merged
            .extend(state.from.iter().copied().zip(state.to.iter().copied()));
        T::absorb_parts(&mut closed.total, state.total);
        for value in state.top {
            rank(&mut closed.top, *value, largest);
        }
    }

    /// How many runs the cell holds.
    fn len(&self) -> usize {
        self.runs.len() + self.segments.iter().map(|s| s.persons.len()).sum::<usize>()
    }

    /// Fails unless every closed person is in no other range of closed
    /// persons and has no run: a person closed in one partition and met in
    /// another would count twice.
    fn check_closed_apart(&self) -> Result<()> {
        let mut ranges: Vec<(u32, u32)> = self.closed.ranges().collect();
        if ranges.is_empty() {
            return Ok(());
        }
        ranges.sort_unstable();
        let meet = ranges.windows(2).any(|pair| pair[1].0 <= pair[0].1);
        let inside = |person: u32| {
            let at = ranges.partition_point(|(from, _)| *from <= person);
            at > 0 && person <= ranges[at - 1].1
        };
        let run_inside = self.runs.iter().any(|(person, _)| inside(*person))
            || self
                .segments
                .iter()
                .any(|s| s.persons.values().iter().any(|p| inside(*p)));
        if meet || run_inside {
            return exec_err!(
                "seuil_person_sums: a person's rows are spread over partitions read in person order"
            );
        }
        Ok(())
    }

    /// The cell's clamped sum and its `largest` largest contributions, in
    /// decreasing order ([`f64::total_cmp`]).
    fn finish(mut self, limits: Limits) -> Result<(Option<T>, Vec<f64>)> {
        self.check_closed_apart()?;
        let Limits {
            bounds: (lower, upper),
            largest,
        } = limits;
        if !self.sorted {
            // Stable and adaptive: runs that came in a few sorted stretches
            // are merged in linear time.
            self.runs.sort_by_key(|(person, _)| *person);
        }
        // Each source in person order, then merged: the states of a scan
        // sorted by person come sorted, and are read where they are.
        let mut resorted: Vec<Vec<(u32, T::Run)>> = Vec::new();
        let mut in_order: Vec<Source<T>> = Vec::new();
        for segment in &self.segments {
            let persons: &[u32] = segment.persons.values();
            let (highs, lows): (&[T], &[T]) = (segment.highs.values(), segment.lows.values());
            if persons.is_sorted() {
                in_order.push(Source::State(persons, highs, lows));
            } else {
                let mut runs: Vec<(u32, T::Run)> = (0..persons.len())
                    .map(|i| (persons[i], T::from_parts(highs[i], lows[i])))
                    .collect();
                runs.sort_by_key(|(person, _)| *person);
                resorted.push(runs);
            }
        }
        let mut sources: Vec<Source<T>> = vec![Source::Own(&self.runs)];
        sources.extend(in_order);
        sources.extend(resorted.iter().map(|runs| Source::Own(runs)));
        sources.retain(|source| source.len() > 0);
        let mut cursors = vec![0usize; sources.len()];
        let Closed {
            mut total, mut top, ..
        } = self.closed;
        let mut person_runs: Vec<(u32, T::Run)> = Vec::new();
        loop {
            // The smallest person at the sources' cursors, and all its runs.
            let next = sources
                .iter()
                .zip(&cursors)
                .filter(|(source, at)| **at < source.len())
                .map(|(source, at)| source.person(*at))
                .min();
            let Some(person) = next else {
                break;
            };
            person_runs.clear();
            for (source, at) in sources.iter().zip(cursors.iter_mut()) {
                while *at < source.len() && source.person(*at) == person {
                    person_runs.push((person, source.run(*at)));
                    *at += 1;
                }
            }
            let Some(contribution) = T::combine(&person_runs).clamp(lower, upper) else {
                continue;
            };
            contribution.add_to(&mut total);
            if largest > 0 {
                rank(&mut top, contribution.to_f64(), largest);
            }
        }
        Ok((T::total(&total), top))
    }
}

/// The values of a call's arguments: persons and values.
fn arguments<T: Contribution>(
    values: &[ArrayRef],
) -> Result<(&UInt32Array, &PrimitiveArray<T::Arrow>)> {
    match (
        values
            .first()
            .and_then(|a| a.as_primitive_opt::<UInt32Type>()),
        values.get(1).and_then(|a| a.as_primitive_opt::<T::Arrow>()),
    ) {
        (Some(persons), Some(partials)) => Ok((persons, partials)),
        _ => exec_err!("seuil_person_sums takes UInt32 persons and their values"),
    }
}

/// A partial state's columns, read: each row's runs (persons, high and
/// low parts), and what it closed (ranges, exact parts of the total,
/// largest contributions).
struct StateColumns<'a, T: Contribution> {
    runs: &'a ListArray,
    persons: &'a UInt32Array,
    highs: &'a PrimitiveArray<T::Arrow>,
    lows: &'a PrimitiveArray<T::Arrow>,
    ranges: &'a ListArray,
    closed_from: &'a UInt32Array,
    closed_to: &'a UInt32Array,
    totals: &'a ListArray,
    total_parts: &'a PrimitiveArray<T::Arrow>,
    tops: &'a ListArray,
    top_values: &'a Float64Array,
}

/// The columns of a partial state.
fn state_columns<T: Contribution>(states: &[ArrayRef]) -> Result<StateColumns<'_, T>> {
    let list = |i: usize| states.get(i).and_then(|s| s.as_list_opt::<i32>());
    let (Some(persons), Some(highs), Some(lows), Some(from), Some(to), Some(totals), Some(tops)) = (
        list(0),
        list(1),
        list(2),
        list(3),
        list(4),
        list(5),
        list(6),
    ) else {
        return exec_err!("seuil_person_sums: a partial state is not its seven lists");
    };
    match (
        persons.values().as_primitive_opt::<UInt32Type>(),
        highs.values().as_primitive_opt::<T::Arrow>(),
        lows.values().as_primitive_opt::<T::Arrow>(),
        from.values().as_primitive_opt::<UInt32Type>(),
        to.values().as_primitive_opt::<UInt32Type>(),
        totals.values().as_primitive_opt::<T::Arrow>(),
        tops.values().as_primitive_opt::<Float64Type>(),
    ) {
        (
            Some(p),
            Some(h),
            Some(l),
            Some(closed_from),
            Some(closed_to),
            Some(total_parts),
            Some(top_values),
        ) if p.len() == h.len()
            && p.len() == l.len()
            && persons.offsets() == highs.offsets()
            && persons.offsets() == lows.offsets()
            && from.offsets() == to.offsets() =>
        {
            Ok(StateColumns {
                runs: persons,
                persons: p,
                highs: h,
                lows: l,
                ranges: from,
                closed_from,
                closed_to,
                totals,
                total_parts,
                tops,
                top_values,
            })
        }
        _ => exec_err!("seuil_person_sums: a partial state's columns do not match"),
    }
}

/// Cells' runs and what they closed as a partial state (see
/// [`state_columns`]).
fn state_of<'a, T: Contribution>(
    cells: impl IntoIterator<Item = &'a Runs<T>> + Clone,
) -> Result<Vec<ArrayRef>> {
    let runs: usize = cells.clone().into_iter().map(Runs::len).sum();
    let mut lengths = Vec::new();
    let mut persons = Vec::with_capacity(runs);
    let mut highs = PrimitiveBuilder::<T::Arrow>::with_capacity(runs);
    let mut lows = PrimitiveBuilder::<T::Arrow>::with_capacity(runs);
    let numbers = || {
        ListBuilder::new(PrimitiveBuilder::<UInt32Type>::new())
            .with_field(Arc::new(Field::new_list_field(DataType::UInt32, false)))
    };
    let (mut closed_from, mut closed_to) = (numbers(), numbers());
    let mut totals = ListBuilder::new(PrimitiveBuilder::<T::Arrow>::new())
        .with_field(Arc::new(Field::new_list_field(T::data_type(), false)));
    let mut tops = ListBuilder::new(PrimitiveBuilder::<Float64Type>::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Float64, false)));
    for cell in cells {
        for (person, run) in &cell.runs {
            let (high, low) = T::parts(*run);
            persons.push(*person);
            highs.append_value(high);
            lows.append_value(low);
        }
        for segment in &cell.segments {
            persons.extend_from_slice(segment.persons.values());
            highs.append_slice(segment.highs.values());
            lows.append_slice(segment.lows.values());
        }
        lengths.push(cell.len());
        let mut closed_any = false;
        for (from, to) in cell.closed.ranges() {
            closed_from.values().append_value(from);
            closed_to.values().append_value(to);
            closed_any = true;
        }
        if closed_any {
            totals
                .values()
                .append_slice(&T::total_parts(&cell.closed.total));
            tops.values().append_slice(&cell.closed.top);
        }
        for list in [&mut closed_from, &mut closed_to] {
            list.append(true);
        }
        totals.append(true);
        tops.append(true);
    }
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
    let list = |values: ArrayRef, data_type: DataType| {
        ListArray::try_new(
            Arc::new(Field::new_list_field(data_type, false)),
            offsets.clone(),
            values,
            None,
        )
        .map(|list| Arc::new(list) as ArrayRef)
    };
    Ok(vec![
        list(Arc::new(UInt32Array::from(persons)), DataType::UInt32)?,
        list(Arc::new(highs.finish()), T::data_type())?,
        list(Arc::new(lows.finish()), T::data_type())?,
        Arc::new(closed_from.finish()),
        Arc::new(closed_to.finish()),
        Arc::new(totals.finish()),
        Arc::new(tops.finish()),
    ])
}

/// Calls `each` with the runs of each row of a partial state, as slices of
/// the state's arrays, and what the row closed.
fn for_each_state<T: Contribution>(
    states: &[ArrayRef],
    mut each: impl FnMut(usize, Segment<T>, Option<ClosedState<'_, T>>),
) -> Result<()> {
    let columns = state_columns::<T>(states)?;
    let offsets = columns.runs.value_offsets();
    let range_offsets = columns.ranges.value_offsets();
    let total_offsets = columns.totals.value_offsets();
    let top_offsets = columns.tops.value_offsets();
    let total_parts: &[T] = columns.total_parts.values();
    let top_values: &[f64] = columns.top_values.values();
    for row in 0..columns.runs.len() {
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let ranges = range_offsets[row] as usize..range_offsets[row + 1] as usize;
        let closed = (!ranges.is_empty()).then(|| ClosedState {
            from: &columns.closed_from.values()[ranges.clone()],
            to: &columns.closed_to.values()[ranges],
            total: &total_parts[total_offsets[row] as usize..total_offsets[row + 1] as usize],
            top: &top_values[top_offsets[row] as usize..top_offsets[row + 1] as usize],
        });
        each(
            row,
            Segment {
                persons: columns.persons.slice(start, end - start),
                highs: columns.highs.slice(start, end - start),
                lows: columns.lows.slice(start, end - start),
            },
            closed,
        );
    }
    Ok(())
}

/// The struct values of finished cells.
fn struct_of<T: Contribution>(finished: Vec<(Option<T>, Vec<f64>)>, largest: usize) -> ArrayRef {
    let sums: PrimitiveArray<T::Arrow> = finished.iter().map(|(sum, _)| *sum).collect();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(sums)];
    for rank in 1..=largest {
        let top: Float64Array = finished
            .iter()
            .map(|(_, top)| top.get(rank - 1).copied())
            .collect();
        columns.push(Arc::new(top));
    }
    Arc::new(StructArray::new(
        struct_fields(&T::data_type(), largest),
        columns,
        None,
    ))
}

fn kept(row: usize, persons: &UInt32Array, filter: Option<&BooleanArray>) -> bool {
    persons.is_valid(row) && filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// Where a partition reading rows in person order is.
#[derive(Debug, Default)]
struct Order {
    /// The persons its cells keep as runs.
    edges: Edges,
    /// The last person it read.
    last: Option<u32>,
}

/// With GROUP BY: the runs of each cell.
#[derive(Debug)]
struct Cells<T: Contribution> {
    cells: Vec<Runs<T>>,
    /// Runs held over all cells (for `size`, which must not walk them).
    stored: usize,
    limits: Limits,
    /// Whether the rows come in person order, and where they are.
    order: Option<Order>,
}

impl<T: Contribution> Cells<T> {
    fn new(limits: Limits, in_person_order: bool) -> Self {
        Self {
            cells: Vec::new(),
            stored: 0,
            limits,
            order: in_person_order.then(Order::default),
        }
    }

    /// Takes the cells `emit_to` asks for.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Runs<T>> {
        let cells = emit_to.take_needed(&mut self.cells);
        self.stored -= cells.iter().map(Runs::len).sum::<usize>();
        cells
    }

    /// Adds rows that come in person order: fails when a person is lower
    /// than one before it.
    fn update_in_order(
        &mut self,
        persons: &UInt32Array,
        partials: &PrimitiveArray<T::Arrow>,
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let Some(order) = self.order.as_mut() else {
            return exec_err!("seuil_person_sums: rows not read in person order");
        };
        let limits = self.limits;
        for (row, &cell) in group_indices.iter().enumerate() {
            if persons.is_null(row) {
                continue;
            }
            let person = persons.value(row);
            match order.last {
                Some(last) if person < last => {
                    return exec_err!(
                        "seuil_person_sums: rows read in person order came out of order"
                    );
                }
                None => order.edges.push(person),
                Some(_) => {}
            }
            order.last = Some(person);
            if !kept(row, persons, opt_filter) || partials.is_null(row) {
                continue;
            }
            let change = self.cells[cell].add_row_in_order(
                person,
                partials.value(row),
                &order.edges,
                limits,
            );
            self.stored = self.stored.saturating_add_signed(change);
        }
        Ok(())
    }
}

impl<T: Contribution> GroupsAccumulator for Cells<T> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let (persons, partials) = arguments::<T>(values)?;
        self.cells.resize_with(total_num_groups, Runs::default);
        if self.order.is_some() {
            return self.update_in_order(persons, partials, group_indices, opt_filter);
        }
        for (row, &cell) in group_indices.iter().enumerate() {
            if !kept(row, persons, opt_filter) || partials.is_null(row) {
                continue;
            }
            let runs = &mut self.cells[cell];
            let before = runs.runs.len();
            runs.add_row(persons.value(row), partials.value(row));
            self.stored += runs.runs.len() - before;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let limits = self.limits;
        let finished = self
            .take(emit_to)
            .into_iter()
            .map(|runs| runs.finish(limits))
            .collect::<Result<Vec<_>>>()?;
        Ok(struct_of::<T>(finished, limits.largest))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let limits = self.limits;
        let mut cells = self.take(emit_to);
        if let Some(order) = self.order.as_mut() {
            // The person being read may go on in the next partition, or in
            // the rows after this state: it stays a run, here and after.
            if let Some(last) = order.last
                && !order.edges.contains(&last)
            {
                order.edges.push(last);
                // The cells that stay close their persons before it now,
                // and those beyond it in ranges of their own: an edge
                // person is inside no range.
                for cell in &mut self.cells {
                    let before = cell.runs.len();
                    cell.close_current(&order.edges, limits);
                    cell.closed.end_range();
                    self.stored -= before - cell.runs.len();
                }
            }
            for cell in &mut cells {
                cell.close_current(&order.edges, limits);
            }
        }
        state_of(&cells)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own cell: one run of its value, or none.
        let (persons, partials) = arguments::<T>(values)?;
        let rows: Vec<Runs<T>> = (0..persons.len())
            .map(|row| {
                let mut runs = Runs::default();
                if kept(row, persons, opt_filter) && partials.is_valid(row) {
                    runs.add_row(persons.value(row), partials.value(row));
                }
                runs
            })
            .collect();
        state_of(&rows)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.cells.resize_with(total_num_groups, Runs::default);
        let (cells, stored, largest) = (&mut self.cells, &mut self.stored, self.limits.largest);
        for_each_state::<T>(values, |row, segment, closed| {
            *stored += segment.persons.len();
            let cell = &mut cells[group_indices[row]];
            cell.add_segment(segment);
            if let Some(closed) = closed {
                cell.add_closed(closed, largest);
            }
        })
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.cells.capacity() * size_of::<Runs<T>>()
            + self.stored * size_of::<(u32, T::Run)>()
    }
}

/// Without GROUP BY: one cell, as the cells of a grouped call.
#[derive(Debug)]
struct OneCell<T: Contribution>(Cells<T>);

impl<T: Contribution> OneCell<T> {
    /// The cell's single row of `array`.
    fn scalar(array: &ArrayRef) -> Result<ScalarValue> {
        ScalarValue::try_from_array(array, 0)
    }
}

impl<T: Contribution> Accumulator for OneCell<T> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        self.0.update_batch(values, &vec![0; rows], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.cells.resize_with(1, Runs::default);
        Self::scalar(&self.0.evaluate(EmitTo::All)?)
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.cells.resize_with(1, Runs::default);
        self.0
            .state(EmitTo::All)?
            .iter()
            .map(Self::scalar)
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states.first().map_or(0, |s| s.len());
        self.0.merge_batch(states, &vec![0; rows], 1)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::functions::literal_argument::testing::partial_aggregation_configs;

    /// Rows `(cell, person, value)` in batches of `batch` rows spread over
    /// `partitions` partitions round the clock.
    fn context(
        rows: &[(i64, u32, Option<f64>)],
        batch: usize,
        partitions: usize,
        config: SessionConfig,
    ) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("p", DataType::UInt32, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let batches: Vec<RecordBatch> = rows
            .chunks(batch)
            .map(|chunk| {
                let g: Int64Array = chunk.iter().map(|r| Some(r.0)).collect();
                let p: UInt32Array = chunk.iter().map(|r| Some(r.1)).collect();
                let v: Float64Array = chunk.iter().map(|r| r.2).collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(g), Arc::new(p), Arc::new(v)],
                )
                .unwrap()
            })
            .collect();
        let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
        for (i, batch) in batches.into_iter().enumerate() {
            parts[i % partitions].push(batch);
        }
        let ctx = SessionContext::new_with_config(config.with_target_partitions(partitions));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
            .unwrap();
        ctx
    }

    /// The struct of each cell, ordered by cell: (sum, tops).
    async fn cells_of(
        ctx: &SessionContext,
        bounds: (f64, f64),
        largest: usize,
    ) -> Vec<(i64, Option<f64>, Vec<Option<f64>>)> {
        let plan = ctx
            .table("t")
            .await
            .unwrap()
            .aggregate(
                vec![datafusion::prelude::col("g")],
                vec![
                    person_sums(
                        datafusion::prelude::col("p"),
                        datafusion::prelude::col("v"),
                        bounds,
                        largest,
                        None,
                    )
                    .alias("s"),
                ],
            )
            .unwrap()
            .sort(vec![datafusion::prelude::col("g").sort(true, false)])
            .unwrap();
        let batches = plan.collect().await.unwrap();
        let mut out = Vec::new();
        for batch in batches {
            let g = batch.column(0).as_primitive::<Int64Type>();
            let s = batch.column(1).as_struct();
            let sum = s.column(0).as_primitive::<Float64Type>();
            for row in 0..batch.num_rows() {
                let tops = (1..=largest)
                    .map(|r| {
                        let top = s.column(r).as_primitive::<Float64Type>();
                        top.is_valid(row).then(|| top.value(row))
                    })
                    .collect();
                out.push((
                    g.value(row),
                    sum.is_valid(row).then(|| sum.value(row)),
                    tops,
                ));
            }
        }
        out
    }

    /// The same cells computed the long way: per person, clamped, added.
    fn expected(
        rows: &[(i64, u32, Option<f64>)],
        (lower, upper): (f64, f64),
        largest: usize,
    ) -> Vec<(i64, Option<f64>, Vec<Option<f64>>)> {
        use std::collections::BTreeMap;
        let mut per_person: BTreeMap<i64, BTreeMap<u32, Sum>> = BTreeMap::new();
        let mut cells: BTreeMap<i64, ()> = BTreeMap::new();
        for (g, p, v) in rows {
            cells.insert(*g, ());
            if let Some(v) = v {
                per_person
                    .entry(*g)
                    .or_default()
                    .entry(*p)
                    .or_default()
                    .add(*v);
            }
        }
        cells
            .keys()
            .map(|g| {
                let mut contributions: Vec<f64> = per_person
                    .get(g)
                    .map(|persons| {
                        persons
                            .values()
                            .map(|s| clamp_f64(s.value().unwrap(), lower, upper))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut total = Sum::default();
                for c in &contributions {
                    total.add(*c);
                }
                contributions.sort_by(|a, b| b.total_cmp(a));
                let tops = (0..largest)
                    .map(|i| contributions.get(i).copied())
                    .collect();
                (*g, total.value(), tops)
            })
            .collect()
    }

    /// Rows of fractional values, whose sums round differently in different
    /// orders: persons over several cells, some with rows far apart, NULL
    /// values, and a cell without values.
    fn rows(shuffled: bool) -> Vec<(i64, u32, Option<f64>)> {
        let mut rows = Vec::new();
        for person in 0..60u32 {
            for k in 0..(person % 7 + 1) {
                let cell = i64::from((person + k) % 4);
                let value = f64::from((person * 13 + k * 7) % 50) * 0.37 - 1.3;
                rows.push((cell, person, (k % 5 != 3).then_some(value)));
            }
        }
        rows.push((9, 3, None));
        if shuffled {
            // A fixed permutation: every 7th row first, and so on.
            let n = rows.len();
            rows = (0..7)
                .flat_map(|start| (start..n).step_by(7))
                .map(|i| rows[i])
                .collect();
        }
        rows
    }

    #[tokio::test]
    async fn clamps_each_persons_sum_whatever_the_order_and_partitioning() {
        let bounds = (0.0, 25.0);
        for shuffled in [false, true] {
            let rows = rows(shuffled);
            let want = expected(&rows, bounds, 3);
            for (name, config) in partial_aggregation_configs() {
                for (batch, partitions) in [(1000, 1), (5, 1), (3, 3), (7, 2)] {
                    let ctx = context(&rows, batch, partitions, config.clone());
                    let got = cells_of(&ctx, bounds, 3).await;
                    assert_eq!(
                        got, want,
                        "{name}, shuffled {shuffled}, batches of {batch} over {partitions}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_cell_without_values_has_a_null_sum_and_no_contributions() {
        let rows = vec![(1, 1, None), (1, 2, None), (2, 1, Some(4.0))];
        let ctx = context(&rows, 10, 1, SessionConfig::new());
        let got = cells_of(&ctx, (0.0, 3.0), 2).await;
        assert_eq!(
            got,
            vec![
                (1, None, vec![None, None]),
                (2, Some(3.0), vec![Some(3.0), None])
            ]
        );
    }

    /// A cell's row as the tests read it: (cell, sum, tops).
    type CellValue = (i64, Option<f64>, Vec<Option<f64>>);

    /// What `finished` (the struct of `cells`, in order) holds.
    fn read_struct(cells: &[i64], finished: &ArrayRef, largest: usize) -> Vec<CellValue> {
        let s = finished.as_struct();
        let sum = s.column(0).as_primitive::<Float64Type>();
        cells
            .iter()
            .enumerate()
            .map(|(row, g)| {
                let tops = (1..=largest)
                    .map(|r| {
                        let top = s.column(r).as_primitive::<Float64Type>();
                        top.is_valid(row).then(|| top.value(row))
                    })
                    .collect();
                (*g, sum.is_valid(row).then(|| sum.value(row)), tops)
            })
            .collect()
    }

    /// Rows in person order read by partitions cut at `cuts`, each in
    /// batches of `batch` rows by accumulators reading in person order
    /// that give a state of their first `early` cells after their first
    /// batch (as DataFusion does under memory pressure), then the states
    /// merged as the final aggregate merges them.
    fn in_person_order_over(
        rows: &[(i64, u32, Option<f64>)],
        cuts: &[usize],
        batch: usize,
        early: Option<usize>,
        (bounds, largest): ((f64, f64), usize),
    ) -> Result<Vec<CellValue>> {
        let limits = Limits { bounds, largest };
        let all_cells: Vec<i64> = rows
            .iter()
            .map(|r| r.0)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut states: Vec<(Vec<i64>, Vec<ArrayRef>)> = Vec::new();
        let mut edges = vec![0];
        edges.extend_from_slice(cuts);
        edges.push(rows.len());
        for part in edges.windows(2).map(|w| &rows[w[0]..w[1]]) {
            let mut cells = Cells::<f64>::new(limits, true);
            // The partition's cells, numbered as they come.
            let mut numbered: Vec<i64> = Vec::new();
            for (i, chunk) in part.chunks(batch).enumerate() {
                let groups: Vec<usize> = chunk
                    .iter()
                    .map(|r| {
                        numbered.iter().position(|g| *g == r.0).unwrap_or_else(|| {
                            numbered.push(r.0);
                            numbered.len() - 1
                        })
                    })
                    .collect();
                let persons: ArrayRef =
                    Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.1)));
                let values: ArrayRef = Arc::new(Float64Array::from_iter(chunk.iter().map(|r| r.2)));
                cells.update_batch(&[persons, values], &groups, None, numbered.len())?;
                if i == 0
                    && let Some(n) = early.filter(|n| *n <= numbered.len())
                {
                    let given: Vec<i64> = numbered.drain(..n).collect();
                    states.push((given, cells.state(EmitTo::First(n))?));
                }
            }
            states.push((numbered, cells.state(EmitTo::All)?));
        }
        let mut last = Cells::<f64>::new(limits, false);
        for (cells, state) in &states {
            let groups: Vec<usize> = cells
                .iter()
                .map(|g| all_cells.iter().position(|c| c == g).unwrap())
                .collect();
            last.merge_batch(state, &groups, all_cells.len())?;
        }
        last.cells.resize_with(all_cells.len(), Runs::default);
        Ok(read_struct(
            &all_cells,
            &last.evaluate(EmitTo::All)?,
            largest,
        ))
    }

    /// [`rows`] sorted by person, each person's rows in their order.
    fn sorted_rows() -> Vec<(i64, u32, Option<f64>)> {
        let mut rows = rows(true);
        rows.sort_by_key(|r| r.1);
        rows
    }

    #[test]
    fn rows_in_person_order_close_persons_and_give_the_same_cells() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let rows = sorted_rows();
        let limits = ((0.0, 25.0), 3);
        let want = expected(&rows, limits.0, limits.1);
        let n = rows.len();
        let mut rng = StdRng::seed_from_u64(17);
        for _ in 0..200 {
            // Cuts anywhere: persons split between partitions, one person
            // over three, empty partitions.
            let mut cuts: Vec<usize> = (0..rng.random_range(0..5))
                .map(|_| rng.random_range(0..=n))
                .collect();
            cuts.sort_unstable();
            let batch = rng.random_range(1..40);
            let early = rng.random_bool(0.3).then(|| rng.random_range(0..4));
            let got = in_person_order_over(&rows, &cuts, batch, early, limits).unwrap();
            assert_eq!(
                got, want,
                "cuts {cuts:?}, batches of {batch}, early {early:?}"
            );
        }
    }

    #[test]
    fn rows_out_of_person_order_or_spread_fail_rather_than_count_twice() {
        let limits = ((0.0, 25.0), 2);
        // A partition whose persons go down.
        let error = in_person_order_over(&rows(true), &[], 10, None, limits).unwrap_err();
        assert!(error.to_string().contains("out of order"), "{error}");
        // Two partitions, each in order, that deal persons alternately: a
        // person closed in one is met in the other.
        let rows = sorted_rows();
        let (mut dealt, even): (Vec<_>, Vec<_>) = rows.iter().copied().partition(|r| r.1 % 2 == 1);
        let first_of_second = dealt.len();
        dealt.extend(even);
        let error = in_person_order_over(&dealt, &[first_of_second], 5, None, limits).unwrap_err();
        assert!(error.to_string().contains("spread"), "{error}");
        // A person closed in the middle of one partition and read first
        // by the next: its run falls inside the first one's closed range.
        let mut met_again: Vec<_> = rows.iter().filter(|r| r.1 <= 30).copied().collect();
        let first_of_second = met_again.len();
        let fifteen = rows.iter().find(|r| r.1 == 15).copied().unwrap();
        met_again.push(fifteen);
        met_again.extend(rows.iter().filter(|r| r.1 > 30).copied());
        let error =
            in_person_order_over(&met_again, &[first_of_second], 9, None, limits).unwrap_err();
        assert!(error.to_string().contains("spread"), "{error}");
    }

    #[test]
    fn ties_keep_their_ranks_and_integers_clamp_as_the_cells_plan_does() {
        let mut runs = Runs::<i64>::default();
        for (person, value) in [(1, 5), (2, 5), (3, 100), (3, 1), (4, -20)] {
            runs.add_row(person, value);
        }
        let (sum, top) = runs
            .finish(Limits {
                bounds: (-2.5, 9.5),
                largest: 3,
            })
            .unwrap();
        // 5 + 5 + 9 (9.5 truncated) - 2 (-2.5 truncated)
        assert_eq!(sum, Some(17));
        assert_eq!(top, vec![9.0, 5.0, 5.0]);
    }
}
