//! What the rewrite knows about a relation's rows: whether they belong to
//! persons and, if so, which output columns carry the person; and the
//! column names the rewrite reserves for itself.
//!
//! This module sits below the rules and the walker: rules read lineage and
//! return verdicts or expressions, the walker carries lineage from node to
//! node, and neither is imported here.

use std::collections::{HashMap, HashSet};

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Name of the hidden column that carries the person through a plan. The
/// user's query is planned before the column exists, so no user query can name
/// it; names starting with `__seuil` are refused in user queries all the same.
pub const PERSON_COLUMN: &str = "__seuil_person";

/// Prefix reserved for the rewrite's own names.
pub const RESERVED_PREFIX: &str = "__seuil";

/// Name of the per-cell distinct-person count in a cells plan.
pub const PERSONS_COLUMN: &str = "__seuil_persons";

/// Name of the dense person number the person index adds to each keyed
/// copy of a private table.
pub const PERSON_NUMBER: &str = "__seuil_person_number";

/// Person lineage of a private relation: where its person is, which column
/// sets determine the person, and which columns hold identifiers.
#[derive(Debug, Clone)]
pub struct PersonLineage {
    /// The hidden person column in the relation's output.
    pub person: Column,
    /// Sets of output columns whose values determine the person of a row
    /// (grouping by any of them is grouping per person).
    pub keys: Vec<Vec<Column>>,
    /// Output columns holding identifiers (rule 4).
    pub identifiers: HashSet<Column>,
    /// Output columns holding magnitudes (rule 6), with the bounds that clamp
    /// one person's contribution in a cell; `None` when the column is
    /// computed from a sensitive column and has no bounds of its own.
    pub sensitive: HashMap<Column, Option<(f64, f64)>>,
}

impl PersonLineage {
    /// The sensitivity of a column: `None` when it is not sensitive,
    /// `Some(bounds)` when it is (bounds `None` for derived magnitudes).
    pub fn sensitivity(&self, column: &Column) -> Option<Option<(f64, f64)>> {
        self.sensitive.get(column).copied()
    }

    /// True when `column` holds an identifier.
    pub fn is_identifier(&self, column: &Column) -> bool {
        self.identifiers.contains(column)
    }

    /// True when the columns in `grouped` include a whole person key (or the
    /// person column itself).
    pub fn is_per_person(&self, grouped: &HashSet<Column>) -> bool {
        grouped.contains(&self.person)
            || self
                .keys
                .iter()
                .any(|key| key.iter().all(|column| grouped.contains(column)))
    }

    /// The lineage after a node that renames columns: `renamed` maps each
    /// input column to the output columns it is passed to unchanged. Key sets
    /// that lose a column are dropped; identifiers follow their column.
    pub fn through(&self, renamed: &HashMap<Column, Vec<Column>>, person: Column) -> Self {
        let identifiers = self
            .identifiers
            .iter()
            .flat_map(|c| renamed.get(c).into_iter().flatten().cloned())
            .collect();
        let keys = self
            .keys
            .iter()
            .filter_map(|key| {
                key.iter()
                    .map(|c| renamed.get(c).and_then(|out| out.first().cloned()))
                    .collect::<Option<Vec<Column>>>()
            })
            .collect();
        let sensitive = self
            .sensitive
            .iter()
            .flat_map(|(c, bounds)| {
                renamed
                    .get(c)
                    .into_iter()
                    .flatten()
                    .map(move |out| (out.clone(), *bounds))
            })
            .collect();
        PersonLineage {
            person,
            keys,
            identifiers,
            sensitive,
        }
    }

    /// The same lineage with every column requalified, as after `AS alias`.
    pub fn requalified(&self, output: &DFSchema) -> Self {
        let by_name = |column: &Column| -> Column {
            output
                .iter()
                .find(|(_, field)| field.name() == &column.name)
                .map(|(q, f)| Column::new(q.cloned(), f.name()))
                .unwrap_or_else(|| column.clone())
        };
        PersonLineage {
            person: by_name(&self.person),
            keys: self
                .keys
                .iter()
                .map(|k| k.iter().map(by_name).collect())
                .collect(),
            identifiers: self.identifiers.iter().map(by_name).collect(),
            sensitive: self
                .sensitive
                .iter()
                .map(|(c, b)| (by_name(c), *b))
                .collect(),
        }
    }
}

/// Whether a relation holds persons' rows.
#[derive(Debug, Clone)]
pub enum Privacy {
    /// No private data below this point.
    Public,
    /// Cells that passed the release rules: safe to combine like public data.
    Released,
    /// Rows that belong to persons.
    Private(Box<PersonLineage>),
}

impl Privacy {
    /// The lineage, for private relations.
    pub fn lineage(&self) -> Option<&PersonLineage> {
        match self {
            Privacy::Private(lineage) => Some(lineage),
            _ => None,
        }
    }
}

/// A rewritten plan node and what it holds.
#[derive(Debug, Clone)]
pub struct Node {
    /// The rewritten plan.
    pub plan: LogicalPlan,
    /// Its privacy state.
    pub privacy: Privacy,
}

/// The input column an expression passes through unchanged, if it is a bare
/// (possibly aliased) column reference.
pub fn bare_column(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(column) => Some(column),
        Expr::Alias(alias) => bare_column(&alias.expr),
        _ => None,
    }
}

/// The expression under numeric casts. `avg(sej_nbj)` of an integer column
/// reaches the rewrite as `avg(CAST(sej_nbj AS Float64))` (type coercion),
/// made a `TRY_CAST` by the side-channel rule: the value is the column's, and
/// so are its bounds.
fn under_numeric_casts(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(cast) if cast.field.data_type().is_numeric() => under_numeric_casts(&cast.expr),
        Expr::TryCast(cast) if cast.field.data_type().is_numeric() => {
            under_numeric_casts(&cast.expr)
        }
        Expr::Alias(alias) => under_numeric_casts(&alias.expr),
        other => other,
    }
}

/// The sensitivity of what an expression computes: `None` when it reads no
/// sensitive column, the column's bounds when it is one bare sensitive
/// column (under numeric casts, if any), and `Some(None)` (a magnitude
/// without bounds) otherwise.
pub fn expr_sensitivity(expr: &Expr, lineage: &PersonLineage) -> Option<Option<(f64, f64)>> {
    if let Some(column) = bare_column(under_numeric_casts(expr)) {
        return lineage.sensitivity(column);
    }
    let mut found = false;
    let _ = expr.apply(|e| {
        if let Expr::Column(column) = e
            && lineage.sensitive.contains_key(column)
        {
            found = true;
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found.then_some(None)
}

/// The output column of position `index` of a schema.
pub fn output_column(schema: &DFSchema, index: usize) -> Column {
    let (qualifier, field) = schema.qualified_field(index);
    Column::new(qualifier.cloned(), field.name())
}

/// A row filter with its columns qualified by the scan alias it applies to.
pub fn requalify(
    filter: &Expr,
    alias: &datafusion::common::TableReference,
) -> datafusion::error::Result<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    filter
        .clone()
        .transform(|e| match e {
            Expr::Column(column) => Ok(Transformed::yes(Expr::Column(Column::new(
                Some(alias.clone()),
                column.name,
            )))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}
