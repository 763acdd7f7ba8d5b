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
//! hash and adds them to the partition's totals per cell ([`totals`]): no
//! (cell, person) row is materialised, and the aggregate per cell above it
//! adds one row per cell and partition. Nothing is kept per person beyond
//! the one being read; the totals are integers, so that they are the same
//! whatever the partitions and the order in which they are added.
//!
//! It is exact whatever the partitions: a scan split into byte ranges may
//! cut a person in two, so the first and the last person of each partition
//! are not added by it but handed to a merger shared by the partitions
//! ([`boundary`]), which the last partition to finish adds, each person
//! once with all its rows. A partition whose persons are out of order, or
//! whose persons another partition also holds (beyond its first and last),
//! fails the query rather than let a person count twice. The planner keeps
//! the scan's partitions as they are below this node
//! ([`planning::PersonOrderRule`]), and the cells plan uses the node only
//! over a scan of one table whose person is a number of the person index
//! ([`streams_by_person`]); other inputs are bounded by DataFusion's
//! operators.
//!
//! The same order serves threshold mode's sums of sensitive columns:
//! [`ordered_sums`] lets each cell of [`crate::functions::person_sums`]
//! close a person as soon as the next one comes.
//!
//! The node travels to data nodes in cells plans ([`crate::federation`])
//! as its parameters; the keyed hash is the receiving session's own
//! function ([`crate::functions::contribution_choice`]), so the key never
//! travels.

mod boundary;
mod cell_ids;
mod exec;
mod node;
pub mod ordered_sums;
pub mod planning;
mod running;
mod totals;

pub use exec::BoundContributionsExec;
pub use node::{
    BoundContributions, Bounds, MOST_PARTIALS, PERSONS_KEPT, Partial, partial_name,
    streams_by_person,
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray, Float64Array, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::common::Result;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl};
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::functions::ContributionChoice;
    use crate::lineage::PERSON_NUMBER;

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
            Field::new(PERSONS_KEPT, DataType::Int64, false),
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

    fn choice() -> ContributionChoice {
        ContributionChoice::new([9; 32])
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
            let persons = batch.column(3).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let cell: &mut (i64, i64, i64) =
                    cells.entry(names.value(i).to_string()).or_default();
                cell.0 += persons.value(i);
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
