//! The logical node [`BoundContributions`]: its parameters, the shape it
//! checks, and whether an input streams person by person.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Column, DFSchema, DFSchemaRef, Result, plan_err};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use serde::{Deserialize, Serialize};

use crate::lineage::PERSON_NUMBER;

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
/// (`UInt32`) and one argument per partial, the totals per cell of each
/// person's bounded partials in at most `max_groups_per_person` of its
/// cells: the cell's columns, then `__seuil_partial_0`,
/// `__seuil_partial_1`, ... (`Int64`, the sums of the persons' bounded
/// partials, NULL where no person has a value), then [`PERSONS_KEPT`]
/// (`Int64`, the persons who keep the cell). A cell may come in several
/// rows (one per partition of the pass): its totals are their sums.
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
        columns.push((
            None,
            Arc::new(Field::new(PERSONS_KEPT, DataType::Int64, false)),
        ));
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

/// The column of the node's output that counts the persons who keep the
/// cell.
pub const PERSONS_KEPT: &str = "__seuil_persons_kept";

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
