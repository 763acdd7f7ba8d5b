//! [`BoundContributionsExec`]: the streaming pass of [`super`], one
//! partition at a time.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, UInt32Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{Row, RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use super::boundary::{Boundary, PersonRecord, person_order};
use super::cell_ids::CellIds;
use super::node::{Bounds, Partial};
use super::running::Running;
use super::totals::CellTotals;
use crate::functions::ContributionChoice;

/// The physical node of [`super::BoundContributions`].
pub struct BoundContributionsExec {
    input: Arc<dyn ExecutionPlan>,
    bounds: Bounds,
    /// The keyed hash of the person and the cell, as the session holds it.
    choice: ContributionChoice,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// The persons at the edges of the partitions, for this execution.
    boundary: Arc<Boundary>,
}

impl fmt::Debug for BoundContributionsExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundContributionsExec")
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl BoundContributionsExec {
    /// The node over `input`, with `schema` as the logical node gives it.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        bounds: Bounds,
        choice: ContributionChoice,
        schema: SchemaRef,
    ) -> Self {
        let partitions = input.output_partitioning().partition_count();
        // The totals come once the partition is read, as an aggregate's.
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            input.boundedness(),
        );
        Self {
            input,
            bounds,
            choice,
            schema,
            properties: Arc::new(properties),
            boundary: Arc::new(Boundary::new(partitions)),
        }
    }

    /// The node's parameters.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }
}

impl DisplayAs for BoundContributionsExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "BoundContributionsExec: cells={}, partials={}, max_groups_per_person={}",
            self.bounds.groups,
            self.bounds.partials.len(),
            self.bounds.max_groups_per_person
        )
    }
}

impl ExecutionPlan for BoundContributionsExec {
    fn name(&self) -> &str {
        "BoundContributionsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    // More partitions would not help: they would mix persons. The scan's
    // own partitions are what this node reads ([`super::planning`]).
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self::new(
                input,
                self.bounds.clone(),
                self.choice.clone(),
                Arc::clone(&self.schema),
            ))),
            _ => internal_err!("BoundContributionsExec takes one input"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let input_schema = self.input.schema();
        let groups = self.bounds.groups;
        let fresh = self.bounds.partials.iter().map(Running::new).collect();
        let reader = PersonReader {
            bounds: self.bounds.clone(),
            choice: self.choice.clone(),
            batch_size: context.session_config().batch_size().max(1),
            schema: Arc::clone(&self.schema),
            cells: PersonCells::new(),
            totals: CellTotals::new(&self.bounds.partials),
            ids: CellIds::new(&input_schema, groups)?,
            person_converter: RowConverter::new(vec![SortField::new(DataType::UInt32)])?,
            fresh,
            current: None,
            current_encoded: Vec::new(),
            first: None,
            first_pending: true,
            boundary: Arc::clone(&self.boundary),
            row_cells: Vec::new(),
            order: Vec::new(),
        };
        let batches = futures::stream::once(reader.run(input))
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }
}

/// The cells of the person being read, by number ([`CellIds`]), each once
/// with its running partials.
struct PersonCells {
    /// The person's cells, in the order of their first rows.
    cells: Vec<usize>,
    /// `partials` states per cell, cell after cell.
    running: Vec<Running>,
    /// By cell number: its place in `cells`, valid where `stamps` holds
    /// the current person's stamp.
    places: Vec<usize>,
    stamps: Vec<u64>,
    /// The current person's stamp: one more for each person, so that
    /// starting a person clears nothing.
    stamp: u64,
}

impl PersonCells {
    fn new() -> Self {
        Self {
            cells: Vec::new(),
            running: Vec::new(),
            places: Vec::new(),
            stamps: Vec::new(),
            stamp: 1,
        }
    }

    fn len(&self) -> usize {
        self.cells.len()
    }

    /// Room for cells numbered below `cells`.
    fn grow(&mut self, cells: usize) {
        if cells > self.stamps.len() {
            self.places.resize(cells, 0);
            self.stamps.resize(cells, 0);
        }
    }

    /// The place of cell `cell` among the person's, added with `fresh`
    /// states if new.
    fn place(&mut self, cell: usize, fresh: &[Running]) -> usize {
        if self.stamps[cell] == self.stamp {
            return self.places[cell];
        }
        let place = self.cells.len();
        self.stamps[cell] = self.stamp;
        self.places[cell] = place;
        self.cells.push(cell);
        self.running.extend_from_slice(fresh);
        place
    }

    /// The person's cells as a record that another partition can read.
    fn record(&self, person: Option<u32>, partials: usize, ids: &CellIds) -> PersonRecord {
        PersonRecord {
            person,
            cells: self
                .cells
                .iter()
                .enumerate()
                .map(|(place, &cell)| {
                    (
                        ids.row(cell).as_ref().to_vec(),
                        self.running[place * partials..(place + 1) * partials].to_vec(),
                    )
                })
                .collect(),
        }
    }

    fn clear(&mut self) {
        self.cells.clear();
        self.running.clear();
        self.stamp += 1;
    }
}

/// One partition's pass.
struct PersonReader {
    bounds: Bounds,
    /// The keyed hash of a person and a cell.
    choice: ContributionChoice,
    batch_size: usize,
    schema: SchemaRef,
    /// The partition's cells, numbered.
    ids: CellIds,
    /// The row format of the person's number, which the keyed hash reads
    /// before the cell's.
    person_converter: RowConverter,
    /// The partials of a cell before any row.
    fresh: Vec<Running>,
    cells: PersonCells,
    totals: CellTotals,
    /// The person being read (`Some(None)`: the rows without a person).
    current: Option<Option<u32>>,
    /// Its number in the row format.
    current_encoded: Vec<u8>,
    /// The partition's first person, once finished: held for the merger,
    /// as another partition may hold the rest of its rows.
    first: Option<PersonRecord>,
    /// Whether the partition's first person is still being read.
    first_pending: bool,
    boundary: Arc<Boundary>,
    /// Each row's cell number, for the batch being read.
    row_cells: Vec<usize>,
    /// The (keyed hash, place) of the cells a person keeps.
    order: Vec<(u64, usize)>,
}

impl PersonReader {
    fn partials(&self) -> usize {
        self.bounds.partials.len()
    }

    fn max_groups(&self) -> usize {
        self.bounds.max_groups_per_person as usize
    }

    /// Reads the partition, then gives its totals per cell.
    async fn run(mut self, mut input: SendableRecordBatchStream) -> Result<Vec<RecordBatch>> {
        while let Some(batch) = input.next().await {
            self.absorb(&batch?)?;
        }
        self.finish()
    }

    /// Adds a batch's rows to their persons' cells.
    fn absorb(&mut self, batch: &RecordBatch) -> Result<()> {
        let groups = self.bounds.groups;
        self.ids.intern_batch(batch, &mut self.row_cells)?;
        self.cells.grow(self.ids.len());
        let Some(persons) = batch.column(groups).as_primitive_opt::<UInt32Type>() else {
            return internal_err!("bounded contributions without a person number");
        };
        let person_rows = self
            .person_converter
            .convert_columns(std::slice::from_ref(batch.column(groups)))?;
        let arguments = self
            .bounds
            .partials
            .iter()
            .enumerate()
            .map(|(j, partial)| {
                let column = batch.column(groups + 1 + j);
                match partial {
                    Partial::Count { .. } => Ok(Argument::Present(column.as_ref())),
                    Partial::ClampedSum { .. } => column
                        .as_primitive_opt()
                        .map(Argument::Values)
                        .ok_or_else(|| {
                            datafusion::error::DataFusionError::Internal(
                                "a clamped sum over values that are not Float64".to_string(),
                            )
                        }),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let partials = arguments.len();
        for r in 0..batch.num_rows() {
            let person = persons.is_valid(r).then(|| persons.value(r));
            if self.current != Some(person) {
                self.next_person(person, person_rows.row(r).as_ref())?;
            }
            let place = self.cells.place(self.row_cells[r], &self.fresh);
            let running = &mut self.cells.running[place * partials..(place + 1) * partials];
            for (argument, state) in arguments.iter().zip(running) {
                match (argument, state) {
                    (Argument::Present(values), Running::Count(n)) => {
                        if values.is_valid(r) {
                            *n += 1;
                        }
                    }
                    (Argument::Values(values), Running::Sum(sum)) => {
                        if values.is_valid(r) {
                            sum.add(values.value(r));
                        }
                    }
                    _ => return internal_err!("a partial's state of another kind"),
                }
            }
        }
        Ok(())
    }

    /// Ends the current person, if any, and starts `person`, `encoded` in
    /// the row format.
    fn next_person(&mut self, person: Option<u32>, encoded: &[u8]) -> Result<()> {
        if let Some(previous) = self.current {
            if person_order(person) < person_order(previous) {
                return exec_err!("the rows of a bounded aggregate are not in person order");
            }
            if self.first_pending {
                self.first = Some(self.cells.record(previous, self.partials(), &self.ids));
                self.first_pending = false;
            } else {
                self.add_person()?;
            }
            self.cells.clear();
        }
        self.current = Some(person);
        self.current_encoded.clear();
        self.current_encoded.extend_from_slice(encoded);
        Ok(())
    }

    /// Adds the person just read to the totals, in the cells it keeps.
    fn add_person(&mut self) -> Result<()> {
        let max_groups = self.max_groups();
        let partials = self.partials();
        let cells = &self.cells;
        let ids = &self.ids;
        if cells.len() > max_groups {
            choose(
                &self.choice,
                &self.current_encoded,
                cells.len(),
                max_groups,
                |place| ids.row(cells.cells[place]),
                &mut self.order,
            );
            for &(_, place) in &self.order {
                let running = &cells.running[place * partials..(place + 1) * partials];
                self.totals.add(cells.cells[place], running)?;
            }
        } else {
            for (place, &cell) in cells.cells.iter().enumerate() {
                let running = &cells.running[place * partials..(place + 1) * partials];
                self.totals.add(cell, running)?;
            }
        }
        Ok(())
    }

    /// Adds a person merged at the partitions' edges, as [`Self::add_person`].
    fn add_record(&mut self, record: &PersonRecord) -> Result<()> {
        let max_groups = self.max_groups();
        let parser = self.ids.converter().parser();
        let rows: Vec<Row<'_>> = record
            .cells
            .iter()
            .map(|(row, _)| parser.parse(row))
            .collect();
        self.order.clear();
        if record.cells.len() > max_groups {
            let person: ArrayRef = Arc::new(UInt32Array::from(vec![record.person]));
            let encoded = self
                .person_converter
                .convert_columns(std::slice::from_ref(&person))?;
            choose(
                &self.choice,
                encoded.row(0).as_ref(),
                rows.len(),
                max_groups,
                |i| rows[i],
                &mut self.order,
            );
        } else {
            self.order.extend((0..rows.len()).map(|i| (0, i)));
        }
        let kept: Vec<usize> = self.order.iter().map(|&(_, i)| i).collect();
        let mut numbers = Vec::new();
        self.ids
            .intern_rows(kept.iter().map(|&i| rows[i]), &mut numbers)?;
        self.cells.grow(self.ids.len());
        for (&i, &cell) in kept.iter().zip(&numbers) {
            self.totals.add(cell, &record.cells[i].1)?;
        }
        Ok(())
    }

    /// Ends the partition: its edge persons to the merger, and its totals,
    /// with the merged edge persons of every partition when this partition
    /// is the last to end.
    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        let mut edges = Vec::new();
        let mut range = None;
        if let Some(last) = self.current.take() {
            let last = self.cells.record(last, self.partials(), &self.ids);
            self.cells.clear();
            let first = self.first.take().unwrap_or_else(|| PersonRecord {
                person: last.person,
                cells: Vec::new(),
            });
            range = Some((person_order(first.person), person_order(last.person)));
            if !first.cells.is_empty() {
                edges.push(first);
            }
            edges.push(last);
        }
        if let Some(merged) = self.boundary.finish(range, edges)? {
            for person in &merged {
                self.add_record(person)?;
            }
        }
        let cells = self.ids.emit()?;
        self.totals.batches(cells, &self.schema, self.batch_size)
    }
}

/// Fills `order` with the `keep` cells (of `len`) that a person with
/// more cells than it keeps counts in: those of the smallest keyed hashes
/// of the person (`person`, in the row format) and the cell (`row_of`),
/// ties broken by the cell, so that the choice is the same on any
/// partitions.
fn choose<'r>(
    choice: &ContributionChoice,
    person: &[u8],
    len: usize,
    keep: usize,
    row_of: impl Fn(usize) -> Row<'r>,
    order: &mut Vec<(u64, usize)>,
) {
    // The first `keep` in order, kept sorted: `keep` is a handful, so
    // inserting into a short list costs less than sorting all the cells.
    let before =
        |a: &(u64, usize), b: &(u64, usize)| a.0 < b.0 || (a.0 == b.0 && row_of(a.1) < row_of(b.1));
    order.clear();
    if keep == 0 {
        return;
    }
    for i in 0..len {
        let entry = (choice.of_encoded(person, row_of(i).as_ref()), i);
        if order.len() == keep {
            if !before(&entry, &order[keep - 1]) {
                continue;
            }
            order.pop();
        }
        let at = order.partition_point(|kept| before(kept, &entry));
        order.insert(at, entry);
    }
}

/// A partial's argument column in a batch.
enum Argument<'a> {
    /// Counted when not null.
    Present(&'a dyn Array),
    /// Added when not null.
    Values(&'a Float64Array),
}
