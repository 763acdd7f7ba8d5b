//! Each person's contributions to the cells of a dp query, bounded in one
//! streaming pass over rows that come person by person (DESIGN.md §2,
//! "dp").
//!
//! The bounded cells plan ([`crate::cells`]) needs, for each person: its
//! partials in each of its cells (a count capped at `max_rows_per_cell`, a
//! sum clamped to the column's bounds), and only its first
//! `max_groups_per_person` cells by the keyed hash of the person and the
//! cell. Built from DataFusion's operators that is an aggregate per (cell,
//! person), some fifteen million groups on a million persons, then a window
//! over persons: ten to twenty times the query in threshold mode
//! (`seuil-bench dp`).
//!
//! The keyed tables of the person index are written sorted by person
//! ([`crate::person_index`]), so a scan of one brings each person's rows
//! together. [`BoundContributions`] reads them so: it keeps the cells of the
//! current person only (a small map from the cell to its partials), and when
//! the person changes it bounds them, keeps the first cells by the keyed
//! hash and emits them, at most `max_groups_per_person` rows per person. The
//! aggregate per cell above it then adds few rows. Nothing is kept per
//! person beyond the one being read.
//!
//! It is exact whatever the partitions: a scan split into byte ranges may
//! cut a person in two, so the first and the last person of each partition
//! are not emitted by it but handed to a merger shared by the partitions
//! ([`boundary`]), which the last partition to finish emits, each person
//! once with all its rows. A partition whose persons are out of order, or
//! whose persons another partition also holds (beyond its first and last),
//! fails the query rather than let a person count twice. The planner keeps
//! the scan's partitions as they are below this node
//! ([`planning::PersonOrderRule`]), and the cells plan uses the node only
//! over a scan of one table whose person is a number of the person index
//! ([`streams_by_person`]); other inputs are bounded by DataFusion's
//! operators.
//!
//! The node travels to data nodes in cells plans ([`crate::federation`])
//! as its parameters; the keyed hash is the receiving session's own
//! function ([`crate::functions::contribution_choice`]), so the key never
//! travels.

mod boundary;
mod exec;
pub mod planning;

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Column, DFSchema, DFSchemaRef, Result, plan_err};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use serde::{Deserialize, Serialize};

use crate::lineage::PERSON_NUMBER;

pub use exec::BoundContributionsExec;

/// The most partials one node bounds: a plan cannot make a node keep more
/// per cell than a query's values ever need.
pub const MOST_PARTIALS: usize = 64;

/// How one partial of a person in a cell is computed and bounded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Partial {
    /// The person's non-null values of the argument, counted and capped.
    Count {
        /// The most counted from one person in one cell.
        cap: u32,
    },
    /// The person's sum of the argument (`Float64`, added exactly), clamped
    /// to the bounds, then rounded to the grid of sums: an integer of units
    /// of `2^grid_power`. NULL when the person has no value in the cell.
    ClampedSum {
        /// The lowest contribution.
        lower: f64,
        /// The highest contribution.
        upper: f64,
        /// The grid's power of two.
        grid_power: i32,
    },
}

impl Partial {
    fn bits(&self) -> (u8, u64, u64, i64) {
        match *self {
            Partial::Count { cap } => (0, u64::from(cap), 0, 0),
            Partial::ClampedSum {
                lower,
                upper,
                grid_power,
            } => (1, lower.to_bits(), upper.to_bits(), i64::from(grid_power)),
        }
    }
}

impl PartialEq for Partial {
    fn eq(&self, other: &Self) -> bool {
        self.bits() == other.bits()
    }
}

impl Eq for Partial {}

impl Hash for Partial {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bits().hash(state);
    }
}

/// What [`BoundContributions`] does with its input: the parameters that
/// travel with a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bounds {
    /// The number of cell columns, first in the input.
    pub groups: usize,
    /// One partial per argument column, after the person's.
    pub partials: Vec<Partial>,
    /// The most cells one person is counted in.
    pub max_groups_per_person: u32,
}

/// The node: over an input of the cell's columns, the person's number
/// (`UInt32`) and one argument per partial, each person's bounded partials
/// in at most `max_groups_per_person` of its cells: the cell's columns,
/// then `__seuil_partial_0`, `__seuil_partial_1`, ... (`Int64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BoundContributions {
    input: LogicalPlan,
    bounds: Bounds,
    schema: DFSchemaRef,
}

impl BoundContributions {
    /// The node over `input`, checked against its shape.
    pub fn try_new(input: LogicalPlan, bounds: Bounds) -> Result<Self> {
        let fields = input.schema().fields();
        if bounds.partials.is_empty() || bounds.partials.len() > MOST_PARTIALS {
            return plan_err!("bounded contributions take 1 to {MOST_PARTIALS} partials");
        }
        if bounds.max_groups_per_person == 0 {
            return plan_err!("bounded contributions keep at least one cell per person");
        }
        if fields.len() != bounds.groups + 1 + bounds.partials.len() {
            return plan_err!("bounded contributions over an input of another shape");
        }
        if fields[bounds.groups].data_type() != &DataType::UInt32 {
            return plan_err!("bounded contributions need a person number");
        }
        for (i, partial) in bounds.partials.iter().enumerate() {
            let argument = fields[bounds.groups + 1 + i].data_type();
            if let Partial::ClampedSum {
                lower,
                upper,
                grid_power,
            } = partial
            {
                let finite = lower.is_finite() && upper.is_finite() && lower <= upper;
                if argument != &DataType::Float64 || !finite || grid_power.abs() > 60 {
                    return plan_err!("a clamped sum of bounded contributions is malformed");
                }
            }
        }
        let input_schema = input.schema();
        let mut columns: Vec<_> = (0..bounds.groups)
            .map(|i| {
                let (qualifier, field) = input_schema.qualified_field(i);
                (qualifier.cloned(), Arc::clone(field))
            })
            .collect();
        columns.extend((0..bounds.partials.len()).map(|i| {
            (
                None,
                Arc::new(Field::new(partial_name(i), DataType::Int64, true)),
            )
        }));
        let schema = DFSchema::new_with_metadata(columns, Default::default())?;
        Ok(Self {
            input,
            bounds,
            schema: Arc::new(schema),
        })
    }

    /// The node's parameters.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }
}

/// The name of partial `i` in the node's output.
pub fn partial_name(i: usize) -> String {
    format!("__seuil_partial_{i}")
}

impl PartialOrd for BoundContributions {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Nodes are compared only to tell plans apart: by input, then by
        // whether the parameters are the same.
        match self.input.partial_cmp(&other.input) {
            Some(Ordering::Equal) if self.bounds != other.bounds => None,
            ordering => ordering,
        }
    }
}

impl UserDefinedLogicalNodeCore for BoundContributions {
    fn name(&self) -> &str {
        "SeuilBoundContributions"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SeuilBoundContributions: cells={}, partials={}, max_groups_per_person={}",
            self.bounds.groups,
            self.bounds.partials.len(),
            self.bounds.max_groups_per_person
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        match (inputs.pop(), inputs.is_empty()) {
            (Some(input), true) => Self::try_new(input, self.bounds.clone()),
            _ => plan_err!("bounded contributions take one input"),
        }
    }
}

/// Whether the rows of `input` come person by person when it runs: its
/// `person` column is the person index's number as a scan of one keyed
/// table reads it, under projections (that rename it at most), filters
/// and aliases only: no join, union or aggregate reorders or mixes its
/// rows.
pub fn streams_by_person(input: &LogicalPlan, person: &Column) -> bool {
    let Ok(mut at) = input.schema().index_of_column(person) else {
        return false;
    };
    let mut node = input;
    loop {
        node = match node {
            LogicalPlan::Projection(projection) => {
                let Some(column) = projection.expr.get(at).and_then(column_of) else {
                    return false;
                };
                match projection.input.schema().index_of_column(column) {
                    Ok(i) => at = i,
                    Err(_) => return false,
                }
                &projection.input
            }
            LogicalPlan::Filter(filter) => &filter.input,
            LogicalPlan::SubqueryAlias(alias) => &alias.input,
            LogicalPlan::TableScan(scan) => {
                return scan.projected_schema.fields().get(at).is_some_and(|field| {
                    field.name() == PERSON_NUMBER && field.data_type() == &DataType::UInt32
                });
            }
            _ => return false,
        };
    }
}

/// The column `expr` is, under its aliases.
fn column_of(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(column) => Some(column),
        Expr::Alias(alias) => column_of(&alias.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Array, AsArray, Float64Array, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{Int64Type, Schema, SchemaRef};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::functions::ContributionChoice;

    const CAP: u32 = 3;
    const LOWER: f64 = 0.0;
    const UPPER: f64 = 10.0;
    const GRID_POWER: i32 = -4;
    const MAX_GROUPS: u32 = 2;

    /// A person's row: (person, cell, value).
    type Row = (u32, String, Option<f64>);

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("cell", DataType::Utf8, false),
            Field::new(PERSON_NUMBER, DataType::UInt32, true),
            Field::new("counted", DataType::Float64, true),
            Field::new("added", DataType::Float64, true),
        ]))
    }

    fn output_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("cell", DataType::Utf8, false),
            Field::new(partial_name(0), DataType::Int64, true),
            Field::new(partial_name(1), DataType::Int64, true),
        ]))
    }

    fn bounds() -> Bounds {
        Bounds {
            groups: 1,
            partials: vec![
                Partial::Count { cap: CAP },
                Partial::ClampedSum {
                    lower: LOWER,
                    upper: UPPER,
                    grid_power: GRID_POWER,
                },
            ],
            max_groups_per_person: MAX_GROUPS,
        }
    }

    fn choice() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(ContributionChoice::new([9; 32])))
    }

    /// Persons 1..=persons in order, each with rows in a few of 8 cells.
    fn rows(seed: u64, persons: u32) -> Vec<Row> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut rows = Vec::new();
        for person in 1..=persons {
            for _ in 0..rng.random_range(1..25) {
                let cell = format!("c{}", rng.random_range(0..8));
                let value = rng.random_bool(0.9).then(|| rng.random_range(-4.0..9.0));
                rows.push((person, cell, value));
            }
        }
        rows
    }

    fn batch(rows: &[Row]) -> RecordBatch {
        let cells = StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()));
        let persons = UInt32Array::from_iter_values(rows.iter().map(|r| r.0));
        let values = Float64Array::from_iter(rows.iter().map(|r| r.2));
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(cells),
                Arc::new(persons),
                Arc::new(values.clone()),
                Arc::new(values),
            ],
        )
        .unwrap()
    }

    /// Per cell: (persons kept, sum of capped counts, sum of clamped sums
    /// in grid units), from the node over `partitions` (each a list of
    /// batches' rows).
    async fn run(partitions: &[Vec<Vec<Row>>]) -> Result<BTreeMap<String, (i64, i64, i64)>> {
        let batches: Vec<Vec<RecordBatch>> = partitions
            .iter()
            .map(|p| p.iter().map(|rows| batch(rows)).collect())
            .collect();
        let input = MemorySourceConfig::try_new_exec(&batches, input_schema(), None)?;
        let exec: Arc<dyn ExecutionPlan> = Arc::new(BoundContributionsExec::new(
            input,
            bounds(),
            choice(),
            output_schema(),
        ));
        let ctx = SessionContext::new();
        let mut cells = BTreeMap::new();
        for batch in collect(exec, ctx.task_ctx()).await? {
            let names = batch.column(0).as_string::<i32>();
            let counts = batch.column(1).as_primitive::<Int64Type>();
            let sums = batch.column(2).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let cell: &mut (i64, i64, i64) =
                    cells.entry(names.value(i).to_string()).or_default();
                cell.0 += 1;
                cell.1 += counts.value(i);
                cell.2 += if sums.is_valid(i) { sums.value(i) } else { 0 };
            }
        }
        Ok(cells)
    }

    /// The same, computed plainly: each person's cells, the first
    /// `MAX_GROUPS` by the keyed hash, each partial bounded.
    fn expected(rows: &[Row]) -> BTreeMap<String, (i64, i64, i64)> {
        let mut per_person: BTreeMap<(u32, String), (i64, Option<f64>)> = BTreeMap::new();
        for (person, cell, value) in rows {
            let entry = per_person.entry((*person, cell.clone())).or_default();
            if let Some(v) = value {
                entry.0 += 1;
                entry.1 = Some(entry.1.unwrap_or(0.0) + v);
            }
        }
        let keys: Vec<_> = per_person.keys().cloned().collect();
        let persons = UInt32Array::from_iter_values(keys.iter().map(|k| k.0));
        let cells = StringArray::from_iter_values(keys.iter().map(|k| k.1.as_str()));
        let hashes = choice()
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Array(Arc::new(persons)),
                    ColumnarValue::Array(Arc::new(cells)),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("p", DataType::UInt32, true)),
                    Arc::new(Field::new("c", DataType::Utf8, false)),
                ],
                number_rows: keys.len(),
                return_field: Arc::new(Field::new("h", DataType::UInt64, false)),
                config_options: Default::default(),
            })
            .unwrap()
            .into_array(keys.len())
            .unwrap();
        let hashes = hashes.as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        let mut by_person: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_person
                .entry(key.0)
                .or_default()
                .push((hashes.value(i), i));
        }
        let mut cells = BTreeMap::new();
        for (_, mut chosen) in by_person {
            chosen.sort_unstable();
            for &(_, i) in chosen.iter().take(MAX_GROUPS as usize) {
                let (count, sum) = per_person[&keys[i]];
                let cell: &mut (i64, i64, i64) = cells.entry(keys[i].1.clone()).or_default();
                cell.0 += 1;
                cell.1 += count.min(i64::from(CAP));
                cell.2 += sum.map_or(0, |s| {
                    (s.clamp(LOWER, UPPER) * 2f64.powi(-GRID_POWER)).round() as i64
                });
            }
        }
        cells
    }

    /// `rows` cut at `cuts` (row positions), then each part in batches of
    /// `batch` rows.
    fn split(rows: &[Row], cuts: &[usize], batch: usize) -> Vec<Vec<Vec<Row>>> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(rows.len());
        bounds
            .windows(2)
            .map(|w| {
                rows[w[0]..w[1]]
                    .chunks(batch)
                    .map(<[Row]>::to_vec)
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn bounds_each_person_exactly_whatever_the_partitions() {
        let rows = rows(11, 300);
        let want = expected(&rows);
        assert!(
            want.values().map(|c| c.0).sum::<i64>() < 300 * 8,
            "the bound is tested"
        );
        let n = rows.len();
        let mut rng = StdRng::seed_from_u64(5);
        let mut layouts = vec![split(&rows, &[], n), split(&rows, &[], 7)];
        for _ in 0..20 {
            // Cuts anywhere, persons split between partitions included, and
            // empty partitions.
            let mut cuts: Vec<usize> = (0..rng.random_range(1..6))
                .map(|_| rng.random_range(0..=n))
                .collect();
            cuts.sort_unstable();
            layouts.push(split(&rows, &cuts, rng.random_range(1..50)));
        }
        // One person across three partitions.
        let first_of_9 = rows.iter().position(|r| r.0 == 9).unwrap();
        let after_9 = rows.iter().position(|r| r.0 == 10).unwrap();
        let middle = (first_of_9 + after_9) / 2;
        if first_of_9 < middle && middle < after_9 {
            layouts.push(split(&rows, &[first_of_9 + 1, middle, after_9 - 1], 3));
        }
        for layout in layouts {
            assert_eq!(run(&layout).await.unwrap(), want);
        }
    }

    #[tokio::test]
    async fn refuses_rows_that_do_not_come_person_by_person() {
        let mut rows = rows(3, 20);
        let out_of_order = {
            let mut rows = rows.clone();
            rows.reverse();
            rows
        };
        let error = run(&split(&out_of_order, &[], 10)).await.unwrap_err();
        assert!(error.to_string().contains("person order"), "{error}");

        // Person 5's rows in two partitions, neither at its edge.
        let fives: Vec<Row> = rows.iter().filter(|r| r.0 == 5).cloned().collect();
        rows.retain(|r| r.0 != 5);
        let at = rows.iter().position(|r| r.0 == 12).unwrap();
        let mut second = fives.clone();
        second.extend_from_slice(&rows[at..]);
        let mut first: Vec<Row> = rows[..at].to_vec();
        first.insert(
            first.iter().position(|r| r.0 == 6).unwrap(),
            fives[0].clone(),
        );
        let partitions = vec![vec![first], vec![second]];
        let error = run(&partitions).await.unwrap_err();
        assert!(error.to_string().contains("spread"), "{error}");
    }
}
