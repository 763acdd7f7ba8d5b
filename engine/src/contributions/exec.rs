//! [`BoundContributionsExec`]: the streaming pass of [`super`], one
//! partition at a time.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, NullArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{ScalarFunctionArgs, ScalarUDF};
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
        // The hash's arguments: the person, then the cell, as the cells
        // plan calls it.
        let mut choice_fields = vec![Arc::clone(&input_schema.fields()[groups])];
        choice_fields.extend(input_schema.fields()[..groups].iter().cloned());
        let fresh = self.bounds.partials.iter().map(Running::new).collect();
        let reader = PersonReader {
            bounds: self.bounds.clone(),
            choice: Arc::clone(&self.choice),
            choice_fields,
            config: Arc::clone(context.session_config().options()),
            batch_size: context.session_config().batch_size().max(1),
            schema: Arc::clone(&self.schema),
            cells: PersonCells::new(&converter),
            crowded: Crowded::new(&converter),
            totals: CellTotals::new(&converter, &self.bounds.partials),
            converter,
            hasher: DefaultHashBuilder::default(),
            fresh,
            current: None,
            first: None,
            first_pending: true,
            boundary: Arc::clone(&self.boundary),
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

/// Persons with more cells than they keep, waiting for the keyed hash to
/// choose theirs: the hash is computed for many persons at once.
struct Crowded {
    rows: Rows,
    persons: Vec<Option<u32>>,
    running: Vec<Running>,
    /// (first row, rows) of each person.
    spans: Vec<(usize, usize)>,
}

impl Crowded {
    fn new(converter: &RowConverter) -> Self {
        Self {
            rows: converter.empty_rows(1024, 16 * 1024),
            persons: Vec::new(),
            running: Vec::new(),
            spans: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.rows.num_rows()
    }

    fn push_person(&mut self, person: Option<u32>, cells: &PersonCells) {
        let start = self.len();
        for i in 0..cells.len() {
            self.rows.push(cells.rows.row(i));
        }
        self.persons.resize(start + cells.len(), person);
        self.running.extend_from_slice(&cells.running);
        self.spans.push((start, cells.len()));
    }

    fn push_record(&mut self, record: &PersonRecord, converter: &RowConverter) {
        let parser = converter.parser();
        let start = self.len();
        for (row, running) in &record.cells {
            self.rows.push(parser.parse(row));
            self.running.extend_from_slice(running);
        }
        self.persons
            .resize(start + record.cells.len(), record.person);
        self.spans.push((start, record.cells.len()));
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.persons.clear();
        self.running.clear();
        self.spans.clear();
    }
}

/// One partition's pass.
struct PersonReader {
    bounds: Bounds,
    choice: Arc<ScalarUDF>,
    choice_fields: Vec<Arc<Field>>,
    config: Arc<ConfigOptions>,
    batch_size: usize,
    schema: SchemaRef,
    converter: RowConverter,
    /// The hasher of cells' rows, for the person's cells and the totals.
    hasher: DefaultHashBuilder,
    /// The partials of a cell before any row.
    fresh: Vec<Running>,
    cells: PersonCells,
    crowded: Crowded,
    totals: CellTotals,
    /// The person being read (`Some(None)`: the rows without a person).
    current: Option<Option<u32>>,
    /// The partition's first person, once finished: held for the merger,
    /// as another partition may hold the rest of its rows.
    first: Option<PersonRecord>,
    /// Whether the partition's first person is still being read.
    first_pending: bool,
    boundary: Arc<Boundary>,
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
                self.next_person(person)?;
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

    /// Ends the current person, if any, and starts `person`.
    fn next_person(&mut self, person: Option<u32>) -> Result<()> {
        if let Some(previous) = self.current {
            if person_order(person) < person_order(previous) {
                return exec_err!("the rows of a bounded aggregate are not in person order");
            }
            if self.first_pending {
                self.first = Some(self.cells.record(previous, self.partials()));
                self.first_pending = false;
            } else {
                self.add_person(previous)?;
            }
            self.cells.clear();
        }
        self.current = Some(person);
        Ok(())
    }

    /// Adds the person just read to the totals, or, with more cells than
    /// it keeps, to the persons whose cells the keyed hash chooses.
    fn add_person(&mut self, person: Option<u32>) -> Result<()> {
        let cells = &self.cells;
        if cells.len() > self.max_groups() {
            self.crowded.push_person(person, cells);
            if self.crowded.len() >= self.batch_size {
                self.choose_crowded()?;
            }
            return Ok(());
        }
        let partials = self.bounds.partials.len();
        for i in 0..cells.len() {
            let running = &cells.running[i * partials..(i + 1) * partials];
            self.totals
                .add(cells.rows.row(i), cells.hashes[i], running)?;
        }
        Ok(())
    }

    /// Adds a person merged at the partitions' edges, as [`Self::add_person`].
    fn add_record(&mut self, record: &PersonRecord) -> Result<()> {
        if record.cells.len() > self.max_groups() {
            self.crowded.push_record(record, &self.converter);
            return Ok(());
        }
        let parser = self.converter.parser();
        for (row, running) in &record.cells {
            let hash = self.hasher.hash_one(row.as_slice());
            self.totals.add(parser.parse(row), hash, running)?;
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
        self.choose_crowded()?;
        self.totals.batches(
            &self.converter,
            &self.schema,
            self.bounds.groups,
            self.batch_size,
        )
    }

    /// Adds the crowded persons' first `max_groups_per_person` cells by the
    /// keyed hash to the totals.
    fn choose_crowded(&mut self) -> Result<()> {
        let crowded = &self.crowded;
        if crowded.len() == 0 {
            return Ok(());
        }
        let max_groups = self.max_groups();
        let partials = self.partials();
        let mut arguments = vec![Arc::new(UInt32Array::from(crowded.persons.clone())) as ArrayRef];
        let mut cells = self.converter.convert_rows(crowded.rows.iter())?;
        // Without cell columns, the one cell's stand-in.
        cells.truncate(self.bounds.groups);
        arguments.extend(cells);
        let hashes = self.choose(arguments)?;
        for &(start, len) in &crowded.spans {
            let mut order: Vec<usize> = (start..start + len).collect();
            // Ties of the hash broken by the cell, so that the choice is the
            // same on any partitions.
            order.sort_unstable_by(|&a, &b| {
                hashes
                    .value(a)
                    .cmp(&hashes.value(b))
                    .then_with(|| crowded.rows.row(a).cmp(&crowded.rows.row(b)))
            });
            for &kept in &order[..max_groups] {
                let row = crowded.rows.row(kept);
                let hash = self.hasher.hash_one(row.as_ref());
                let running = &crowded.running[kept * partials..(kept + 1) * partials];
                self.totals.add(row, hash, running)?;
            }
        }
        self.crowded.clear();
        Ok(())
    }

    /// The keyed hash of each (person, cell) of `arguments`.
    fn choose(&self, arguments: Vec<ArrayRef>) -> Result<UInt64Array> {
        let number_rows = arguments.first().map_or(0, |a| a.len());
        let args = ScalarFunctionArgs {
            args: arguments
                .into_iter()
                .map(datafusion::logical_expr::ColumnarValue::Array)
                .collect(),
            arg_fields: self.choice_fields.clone(),
            number_rows,
            return_field: Arc::new(Field::new("choice", DataType::UInt64, false)),
            config_options: Arc::clone(&self.config),
        };
        let hashes = self
            .choice
            .invoke_with_args(args)?
            .into_array(number_rows)?;
        match hashes.as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>() {
            Some(hashes) if hashes.len() == number_rows => Ok(hashes.clone()),
            _ => internal_err!("the keyed hash gave no value per cell"),
        }
    }
}

/// A partial's argument column in a batch.
enum Argument<'a> {
    /// Counted when not null.
    Present(&'a dyn Array),
    /// Added when not null.
    Values(&'a Float64Array),
}
