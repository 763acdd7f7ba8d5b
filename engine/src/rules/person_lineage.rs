//! Rule 3, person lineage through the whole plan.
//!
//! > The rewrite carries the person id (a hidden column) through projections,
//! > filters, joins, unions, subqueries and CTEs, so that the final aggregate
//! > can count distinct persons. Intermediate per-person aggregates are
//! > allowed, since only the outer result is released. Joins between two
//! > private relations must match on the person; anything that could mix
//! > persons (cross-person joins, window functions not partitioned by the
//! > person) is refused.
//!
//! Every scan of a private table becomes the raw table, filtered by the
//! role's row filters, joined along the policy's `person_via` path to the
//! person table, and projected to the columns the user's query saw plus the
//! hidden [`PERSON_COLUMN`](crate::lineage::PERSON_COLUMN). The joins are the engine's own: a query on
//! `er_prs_f` counts persons without the user joining `ir_ben_r`. With a
//! person index ([`crate::person_index`]) those joins were done once when
//! the engine opened, and the scan reads the table's keyed copy instead.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, JoinType, TableReference};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Projection, TableScan, col};
use seuil_policies::{ColumnClass, Policy, TableKind};

use crate::catalog::DataCatalog;
use crate::error::{EngineError, Refusal, Rule, place_of, place_of_column, plan_fault};
use crate::functions::KnownAggregate;
use crate::hints;
use crate::lineage::PERSON_NUMBER;
use crate::lineage::{Node, PersonLineage, Privacy, bare_column, output_column};
use crate::rules::identifiers;

/// Builds the replacement of one user scan.
pub struct ScanRewrite<'a> {
    /// The policy.
    pub policy: &'a Policy,
    /// The raw tables.
    pub data: &'a DataCatalog,
    /// The role's row filters by table, unqualified.
    pub row_filters: &'a std::collections::BTreeMap<String, Expr>,
}

impl ScanRewrite<'_> {
    fn raw_scan(
        &self,
        table: &str,
        alias: TableReference,
    ) -> Result<LogicalPlanBuilder, EngineError> {
        let provider = self
            .data
            .table(table)
            .ok_or_else(|| EngineError::InvalidQuery(format!("table {table} not found")))?;
        self.scan(table, provider, alias)
    }

    /// A scan of `provider` (table `table` or its keyed copy) under
    /// `alias`, filtered by the role's row filter on `table`.
    fn scan(
        &self,
        table: &str,
        provider: &Arc<dyn TableProvider>,
        alias: TableReference,
    ) -> Result<LogicalPlanBuilder, EngineError> {
        let mut builder = LogicalPlanBuilder::scan(
            alias.clone(),
            provider_as_source(Arc::clone(provider)),
            None,
        )
        .map_err(plan_fault)?;
        if let Some(filter) = self.row_filters.get(table) {
            builder = builder
                .filter(crate::lineage::requalify(filter, &alias).map_err(plan_fault)?)
                .map_err(plan_fault)?;
        }
        Ok(builder)
    }

    /// The rows of private table `table` that reach a person, under an
    /// internal name (so that the path's tables never clash with the user's
    /// names), with the column that holds their person and that name.
    ///
    /// With a person index, the table's keyed copy already holds the person
    /// number of each row. Without one, or when the role filters a table of
    /// the path (whose filter must then apply), the rows are joined along the
    /// policy's path; the last step reads the keyed person table when there
    /// is an index, so that persons are numbers in either case.
    pub fn rows_with_person(
        &self,
        table: &str,
    ) -> Result<(LogicalPlanBuilder, Column, TableReference), EngineError> {
        let base = TableReference::bare("__seuil_t0");
        let path = self.policy.path_to_person(table);
        let index = self.data.person_index();
        let path_filtered = path
            .iter()
            .any(|link| self.row_filters.contains_key(&link.table));
        if let Some(keyed) = index.and_then(|i| i.table(table))
            && !path_filtered
        {
            let builder = self.scan(table, keyed, base.clone())?;
            let person = Column::new(Some(base.clone()), PERSON_NUMBER);
            return Ok((builder, person, base));
        }
        let mut builder = self.raw_scan(table, base.clone())?;
        let mut person = Column::new(Some(base.clone()), &self.policy.person.column);
        let mut current = base.clone();
        for (step, link) in path.into_iter().enumerate() {
            let alias = TableReference::bare(format!("__seuil_t{}", step + 1));
            let keyed_persons = index
                .filter(|_| link.table == self.policy.person.table)
                .and_then(|i| i.table(&link.table));
            let (right, person_column) = match keyed_persons {
                Some(keyed) => (self.scan(&link.table, keyed, alias.clone())?, PERSON_NUMBER),
                None => (
                    self.raw_scan(&link.table, alias.clone())?,
                    self.policy.person.column.as_str(),
                ),
            };
            let left_keys: Vec<Column> = link
                .columns
                .iter()
                .map(|c| Column::new(Some(current.clone()), c))
                .collect();
            let right_keys: Vec<Column> = link
                .references
                .iter()
                .map(|c| Column::new(Some(alias.clone()), c))
                .collect();
            builder = builder
                .join(
                    right.build().map_err(plan_fault)?,
                    JoinType::Inner,
                    (left_keys, right_keys),
                    None,
                )
                .map_err(plan_fault)?;
            person = Column::new(Some(alias.clone()), person_column);
            current = alias;
        }
        Ok((builder, person, base))
    }

    /// The rewritten scan: raw rows of the role's scope, with their person.
    pub fn rewrite(&self, scan: &TableScan, person_name: &str) -> Result<Node, EngineError> {
        let table = scan.table_name.table().to_string();
        let policy_table = self
            .policy
            .table(&table)
            .ok_or_else(|| EngineError::InvalidQuery(format!("table {table} not found")))?;
        let qualifier = scan.table_name.clone();
        let visible: Vec<String> = scan
            .projected_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();

        if policy_table.kind == TableKind::Public {
            let plan = self
                .raw_scan(&table, qualifier.clone())?
                .project(
                    visible
                        .iter()
                        .map(|name| Expr::Column(Column::new(Some(qualifier.clone()), name))),
                )
                .map_err(plan_fault)?
                .build()
                .map_err(plan_fault)?;
            return Ok(Node {
                plan: with_scan_extras(plan, scan)?,
                privacy: Privacy::Public,
            });
        }

        let (builder, person, base) = self.rows_with_person(&table)?;
        let mut projection: Vec<Expr> = visible
            .iter()
            .map(|name| {
                Expr::Column(Column::new(Some(base.clone()), name))
                    .alias_qualified(Some(qualifier.clone()), name)
            })
            .collect();
        projection.push(Expr::Column(person).alias_qualified(Some(qualifier.clone()), person_name));
        let plan = builder
            .project(projection)
            .map_err(plan_fault)?
            .build()
            .map_err(plan_fault)?;

        let in_output = |name: &String| visible.contains(name);
        let mut keys: Vec<Vec<Column>> = self
            .policy
            .person_keys(&table)
            .into_iter()
            .filter(|key| key.iter().all(in_output))
            .map(|key| {
                key.iter()
                    .map(|c| Column::new(Some(qualifier.clone()), c))
                    .collect()
            })
            .collect();
        keys.push(vec![Column::new(Some(qualifier.clone()), person_name)]);
        let identifiers: HashSet<Column> = visible
            .iter()
            .filter(|c| {
                policy_table.columns.get(*c).map(|p| p.class) == Some(ColumnClass::Identifier)
            })
            .map(|c| Column::new(Some(qualifier.clone()), c))
            .collect();
        let sensitive = visible
            .iter()
            .filter_map(|c| {
                let column = policy_table.columns.get(c)?;
                (column.class == ColumnClass::Sensitive)
                    .then(|| (Column::new(Some(qualifier.clone()), c), column.bounds))
            })
            .collect();
        Ok(Node {
            plan: with_scan_extras(plan, scan)?,
            privacy: Privacy::Private(Box::new(PersonLineage {
                person: Column::new(Some(qualifier), person_name),
                keys,
                identifiers,
                sensitive,
            })),
        })
    }
}

/// A user plan is never optimized before the rewrite, so its scans carry no
/// pushed filters or limits; if one ever does, keep its meaning.
fn with_scan_extras(plan: LogicalPlan, scan: &TableScan) -> Result<LogicalPlan, EngineError> {
    let mut builder = LogicalPlanBuilder::from(plan);
    for filter in &scan.filters {
        builder = builder.filter(filter.clone()).map_err(plan_fault)?;
    }
    if let Some(fetch) = scan.fetch {
        builder = builder.limit(0, Some(fetch)).map_err(plan_fault)?;
    }
    builder.build().map_err(plan_fault)
}

/// The columns of `exprs` that are bare columns.
pub fn bare_columns(exprs: &[Expr]) -> HashSet<Column> {
    exprs.iter().filter_map(bare_column).cloned().collect()
}

/// Checks that a join of two private relations matches on the person: the
/// equi-join keys must cover a person key of each side. Returns the refusal
/// otherwise.
pub fn check_join_on_person(
    on: &[(Expr, Expr)],
    left: &PersonLineage,
    right: &PersonLineage,
    place: Option<crate::error::Place>,
    policy: &Policy,
) -> Result<(), Refusal> {
    let left_columns: HashSet<Column> = on
        .iter()
        .filter_map(|(l, _)| bare_column(l))
        .cloned()
        .collect();
    let right_columns: HashSet<Column> = on
        .iter()
        .filter_map(|(_, r)| bare_column(r))
        .cloned()
        .collect();
    if left.is_per_person(&left_columns) && right.is_per_person(&right_columns) {
        Ok(())
    } else {
        Err(Refusal::new(
            Rule::PersonLineage,
            "a join of two private tables must match rows of the same person; this one could mix persons",
            format!(
                "join on the keys that lead to the person: {}",
                hints::person_keys(policy).join(" or ")
            ),
        )
        .at(place))
    }
}

/// The expression of the person column after a join of two private sides.
pub fn joined_person(join_type: JoinType, left: &Column, right: &Column) -> Expr {
    match join_type {
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
            col(right.clone())
        }
        JoinType::Full => datafusion::functions::core::expr_fn::coalesce(vec![
            col(left.clone()),
            col(right.clone()),
        ]),
        _ => col(left.clone()),
    }
}

/// The lineage of a join or union of two relations: the persons of either
/// side, with the identifiers and magnitudes of both.
pub fn combined_lineage(
    left: Option<&PersonLineage>,
    right: Option<&PersonLineage>,
) -> Option<PersonLineage> {
    match (left, right) {
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => Some(one.clone()),
        (Some(l), Some(r)) => Some(joined_lineage(l, r, l.person.clone(), Vec::new())),
    }
}

/// The lineage of rows that join two private sides: their person and keys
/// as given, the identifiers and sensitive columns of both.
fn joined_lineage(
    left: &PersonLineage,
    right: &PersonLineage,
    person: Column,
    keys: Vec<Vec<Column>>,
) -> PersonLineage {
    PersonLineage {
        person,
        keys,
        identifiers: left
            .identifiers
            .union(&right.identifiers)
            .cloned()
            .collect(),
        sensitive: left
            .sensitive
            .iter()
            .chain(right.sensitive.iter())
            .map(|(c, b)| (c.clone(), *b))
            .collect(),
    }
}

/// After an inner or outer join of two private sides, keep one person column.
pub fn one_person_after_join(
    joined: LogicalPlan,
    join_type: JoinType,
    left: &PersonLineage,
    right: &PersonLineage,
    person_name: &str,
) -> Result<Node, EngineError> {
    let schema = Arc::clone(joined.schema());
    let mut exprs = Vec::with_capacity(schema.fields().len() - 1);
    for i in 0..schema.fields().len() {
        let column = output_column(&schema, i);
        if column == left.person || column == right.person {
            continue;
        }
        exprs.push(Expr::Column(column));
    }
    exprs.push(joined_person(join_type, &left.person, &right.person).alias(person_name));
    let projection = Projection::try_new(exprs, Arc::new(joined)).map_err(plan_fault)?;
    let last = projection.schema.fields().len() - 1;
    let person = output_column(&projection.schema, last);
    let mut keys: Vec<Vec<Column>> = match join_type {
        JoinType::Inner => left.keys.iter().chain(right.keys.iter()).cloned().collect(),
        JoinType::Left => left.keys.clone(),
        JoinType::Right => right.keys.clone(),
        _ => Vec::new(),
    };
    keys.retain(|key| !key.contains(&left.person) && !key.contains(&right.person));
    keys.push(vec![person.clone()]);
    Ok(Node {
        plan: LogicalPlan::Projection(projection),
        privacy: Privacy::Private(Box::new(joined_lineage(left, right, person, keys))),
    })
}

/// A window function over private rows must be partitioned by the person,
/// and may not read identifiers.
pub fn check_window(
    expr: &Expr,
    lineage: &PersonLineage,
    policy: &Policy,
) -> Result<(), EngineError> {
    let mut outcome = Ok(());
    let _ = expr.apply(|e| {
        if let Expr::WindowFunction(window) = e {
            outcome = check_one_window(window, lineage, e, policy);
            if outcome.is_err() {
                return Ok(TreeNodeRecursion::Stop);
            }
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    outcome
}

fn check_one_window(
    window: &WindowFunction,
    lineage: &PersonLineage,
    expr: &Expr,
    policy: &Policy,
) -> Result<(), EngineError> {
    let partitioned: HashSet<Column> = bare_columns(&window.params.partition_by);
    if !lineage.is_per_person(&partitioned) {
        return Err(EngineError::Refused(
            Refusal::new(
                Rule::PersonLineage,
                format!(
                    "window function {} over private rows must be partitioned by the person; otherwise it mixes persons",
                    window.fun.name()
                ),
                format!(
                    "add PARTITION BY a key that leads to the person, such as {}",
                    hints::person_keys(policy).join(" or ")
                ),
            )
            .at(place_of(expr)),
        ));
    }
    if KnownAggregate::named(window.fun.name()) != KnownAggregate::Count {
        for argument in &window.params.args {
            if let Some(column) = identifiers::first_identifier(argument, lineage) {
                return Err(EngineError::Refused(
                    Refusal::new(
                        Rule::Identifiers,
                        format!(
                            "column {} is an identifier and cannot be passed to {}",
                            column.name,
                            window.fun.name()
                        ),
                        "identifiers may be used to join, to count, and to partition per person",
                    )
                    .at(place_of_column(column)),
                ));
            }
        }
    }
    for sort in &window.params.order_by {
        identifiers::check_order(&sort.expr, lineage)?;
    }
    Ok(())
}
