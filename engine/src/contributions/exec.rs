//! [`BoundContributionsExec`]: the streaming pass of [`super`], one
//! partition at a time.

use std::any::Any;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, NullArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, internal_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::boundary::{Boundary, PersonRecord, person_order};
use super::node::{Bounds, Partial};
use super::running::Running;
use super::totals::CellTotals;
use crate::functions::ContributionChoice;

/// The physical node of [`super::BoundContributions`].
pub struct BoundContributionsExec {
    input: Arc<dyn ExecutionPlan>,
    bounds: Bounds,
    /// The keyed hash of the person and the cell, as the session holds it.
    choice: Arc<ScalarUDF>,
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
        choice: Arc<ScalarUDF>,
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
                Arc::clone(&self.choice),
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
        let converter = RowConverter::new(cell_fields(&input_schema, groups))?;
        let Some(choice) = (self.choice.inner().as_ref() as &dyn Any)
            .downcast_ref::<ContributionChoice>()
            .cloned()
        else {
            return internal_err!("bounded contributions without seuil's keyed hash");
        };
        let fresh = self.bounds.partials.iter().map(Running::new).collect();
        let reader = PersonReader {
            bounds: self.bounds.clone(),
            choice,
            batch_size: context.session_config().batch_size().max(1),
            schema: Arc::clone(&self.schema),
            cells: PersonCells::new(&converter),
            totals: CellTotals::new(&converter, &self.bounds.partials),
            converter,
            person_converter: RowConverter::new(vec![SortField::new(DataType::UInt32)])?,
            hasher: DefaultHashBuilder::default(),
            fresh,
            current: None,
            current_encoded: Vec::new(),
            first: None,
            first_pending: true,
            boundary: Arc::clone(&self.boundary),
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

/// The row format of the cells: their columns, or, for an aggregate
/// without groups (one cell), a column of NULLs that stands for it, as the
/// row format needs a column to count rows.
fn cell_fields(input: &SchemaRef, groups: usize) -> Vec<SortField> {
    if groups == 0 {
        return vec![SortField::new(DataType::Null)];
    }
    input.fields()[..groups]
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect()
}

/// The columns of `batch` that [`cell_fields`] describes.
fn cell_columns(batch: &RecordBatch, groups: usize) -> Vec<ArrayRef> {
    if groups == 0 {
        return vec![Arc::new(NullArray::new(batch.num_rows()))];
    }
    batch.columns()[..groups].to_vec()
}

/// The cells of the person being read: each cell once, in the Arrow row
/// format, with its running partials.
struct PersonCells {
    rows: Rows,
    hashes: Vec<u64>,
    /// Positions in `rows`, by hash.
    table: HashTable<usize>,
    /// `partials` states per cell, cell after cell.
    running: Vec<Running>,
    /// The cell of the previous row: a person's consecutive rows are often
    /// in one cell.
    last: Option<usize>,
}

impl PersonCells {
    fn new(converter: &RowConverter) -> Self {
        Self {
            rows: converter.empty_rows(64, 1024),
            hashes: Vec::new(),
            table: HashTable::new(),
            running: Vec::new(),
            last: None,
        }
    }

    fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// The position of `row`'s cell, added with `fresh` states if new.
    fn cell(&mut self, row: Row<'_>, fresh: &[Running], hasher: &DefaultHashBuilder) -> usize {
        if let Some(last) = self.last
            && self.rows.row(last) == row
        {
            return last;
        }
        let hash = hasher.hash_one(row.as_ref());
        let rows = &self.rows;
        let position = match self.table.find(hash, |&i| rows.row(i) == row) {
            Some(&i) => i,
            None => {
                let i = self.rows.num_rows();
                self.rows.push(row);
                self.hashes.push(hash);
                let hashes = &self.hashes;
                self.table.insert_unique(hash, i, |&j| hashes[j]);
                self.running.extend_from_slice(fresh);
                i
            }
        };
        self.last = Some(position);
        position
    }

    /// The person's cells as a record that outlives this reader's rows.
    fn record(&self, person: Option<u32>, partials: usize) -> PersonRecord {
        PersonRecord {
            person,
            cells: (0..self.len())
                .map(|i| {
                    (
                        self.rows.row(i).as_ref().to_vec(),
                        self.running[i * partials..(i + 1) * partials].to_vec(),
                    )
                })
                .collect(),
        }
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.hashes.clear();
        // A person with many cells grew the table: a fresh one, rather than
        // clearing all its buckets for every person after.
        if self.table.capacity() > 1024 {
            self.table = HashTable::new();
        } else {
            self.table.clear();
        }
        self.running.clear();
        self.last = None;
    }
}

/// One partition's pass.
struct PersonReader {
    bounds: Bounds,
    /// The keyed hash of a person and a cell.
    choice: ContributionChoice,
    batch_size: usize,
    schema: SchemaRef,
    /// The row format of the cells.
    converter: RowConverter,
    /// The row format of the person's number, which the keyed hash reads
    /// before the cell's.
    person_converter: RowConverter,
    /// The hasher of cells' rows, for the person's cells and the totals.
    hasher: DefaultHashBuilder,
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
    /// The (keyed hash, cell) of a person with more cells than it keeps.
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
        let rows = self
            .converter
            .convert_columns(&cell_columns(batch, groups))?;
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
            let cell = self.cells.cell(rows.row(r), &self.fresh, &self.hasher);
            let running = &mut self.cells.running[cell * partials..(cell + 1) * partials];
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
                self.first = Some(self.cells.record(previous, self.partials()));
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
        let kept = cells.len().min(max_groups);
        if cells.len() > max_groups {
            choose(
                &self.choice,
                &self.current_encoded,
                cells.len(),
                max_groups,
                |i| cells.rows.row(i),
                &mut self.order,
            );
        } else {
            self.order.clear();
            self.order.extend((0..kept).map(|i| (0, i)));
        }
        for &(_, i) in &self.order {
            let running = &cells.running[i * partials..(i + 1) * partials];
            self.totals
                .add(cells.rows.row(i), cells.hashes[i], running)?;
        }
        Ok(())
    }

    /// Adds a person merged at the partitions' edges, as [`Self::add_person`].
    fn add_record(&mut self, record: &PersonRecord) -> Result<()> {
        let max_groups = self.max_groups();
        let parser = self.converter.parser();
        let row_of = |i: usize| parser.parse(&record.cells[i].0);
        if record.cells.len() > max_groups {
            let person: ArrayRef = Arc::new(UInt32Array::from(vec![record.person]));
            let encoded = self
                .person_converter
                .convert_columns(std::slice::from_ref(&person))?;
            choose(
                &self.choice,
                encoded.row(0).as_ref(),
                record.cells.len(),
                max_groups,
                row_of,
                &mut self.order,
            );
        } else {
            self.order.clear();
            self.order.extend((0..record.cells.len()).map(|i| (0, i)));
        }
        for &(_, i) in &self.order {
            let row = row_of(i);
            let hash = self.hasher.hash_one(row.as_ref());
            self.totals.add(row, hash, &record.cells[i].1)?;
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
            let last = self.cells.record(last, self.partials());
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
        self.totals.batches(
            &self.converter,
            &self.schema,
            self.bounds.groups,
            self.batch_size,
        )
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
    order.clear();
    order.extend((0..len).map(|i| (choice.of_encoded(person, row_of(i).as_ref()), i)));
    if keep == 0 || keep >= len {
        order.truncate(keep);
        return;
    }
    order.select_nth_unstable_by(keep - 1, |a, b| {
        a.0.cmp(&b.0).then_with(|| row_of(a.1).cmp(&row_of(b.1)))
    });
    order.truncate(keep);
}

/// A partial's argument column in a batch.
enum Argument<'a> {
    /// Counted when not null.
    Present(&'a dyn Array),
    /// Added when not null.
    Values(&'a Float64Array),
}
