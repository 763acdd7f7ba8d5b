//! The privacy rewrite: one bottom-up pass over the user's `LogicalPlan` that
//! enforces the contract's rules node by node and returns a plain DataFusion
//! plan.
//!
//! Each node of the user's plan is rebuilt over its rewritten inputs and
//! classified as [`Privacy::Public`], [`Privacy::Private`] (rows of persons,
//! with their [`PersonLineage`]) or [`Privacy::Released`] (cells that passed
//! the release step). The rules themselves live in [`crate::rules`], one
//! module per rule of DESIGN.md §2; this module only walks the plan and calls
//! them where they apply.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::expr::GroupingSet;
use datafusion::logical_expr::{
    Aggregate, Expr, Filter, Join, JoinType, LogicalPlan, Projection, SubqueryAlias, Union, Window,
    col, lit,
};
use seuil_policies::{Policy, Role};

use crate::catalog::DataCatalog;
use crate::cells::{self, CellsNeeds, ReleaseStep};
use crate::error::{EngineError, Place, Refusal, Rule, place_of, plan_fault};
use crate::lineage::{
    Node, PERSON_COLUMN, PersonLineage, Privacy, RESERVED_PREFIX, bare_column, output_column,
};
use crate::rules::{
    aggregates_only, identifiers, magnitudes, margins, person_lineage, side_channels,
};

/// The rewritten query: the plan that produces the result from released
/// cells, and the released aggregates whose cells must be computed and
/// released first, in order.
#[derive(Debug, Clone)]
pub struct RewrittenQuery {
    /// The plan of the result, reading released cells.
    pub plan: LogicalPlan,
    /// The released aggregates, innermost first.
    pub releases: Vec<ReleaseStep>,
    /// What the rewrite did, rule by rule, for `explain`.
    pub notes: BTreeSet<Note>,
}

/// What one rule did to a query, in words, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    /// The rule that acted.
    pub rule: Rule,
    /// What it did.
    pub text: String,
}

impl Note {
    fn new(rule: Rule, text: impl Into<String>) -> Self {
        Self {
            rule,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule.number() {
            Some(n) => write!(f, "{} (rule {n}): {}", self.rule.title(), self.text),
            None => write!(f, "{}: {}", self.rule.title(), self.text),
        }
    }
}

/// The rewrite of one query for one role.
pub struct PrivacyRewrite<'a> {
    policy: &'a Policy,
    role: &'a Role,
    data: &'a DataCatalog,
    row_filters: &'a BTreeMap<String, Expr>,
    needs: CellsNeeds,
    releases: Vec<ReleaseStep>,
    notes: BTreeSet<Note>,
    person_columns: usize,
    depth: usize,
}

/// The deepest plan the rewrite walks. The query's size limits
/// ([`crate::limits`]) keep real plans far below it; this bounds the
/// walker's own recursion whatever reaches it.
const MAX_PLAN_DEPTH: usize = 2_000;

impl<'a> PrivacyRewrite<'a> {
    /// A name for a new person column, unique in the plan, so that two
    /// relations' person columns never clash in a join's schema.
    fn fresh_person(&mut self) -> String {
        self.person_columns += 1;
        format!("{PERSON_COLUMN}_{}", self.person_columns)
    }

    /// A rewrite for `role` of `policy` over `data`, whose cells plans
    /// compute what the role's release mechanism `needs`.
    pub fn new(
        policy: &'a Policy,
        role: &'a Role,
        data: &'a DataCatalog,
        row_filters: &'a BTreeMap<String, Expr>,
        needs: CellsNeeds,
    ) -> Self {
        Self {
            policy,
            role,
            data,
            row_filters,
            needs,
            releases: Vec::new(),
            notes: BTreeSet::new(),
            person_columns: 0,
            depth: 0,
        }
    }

    /// Rewrites an analyzed user plan.
    pub fn run(mut self, plan: &LogicalPlan) -> Result<RewrittenQuery, EngineError> {
        let root = self.rewrite(plan)?;
        aggregates_only::check_root(&root, self.policy, self.data)?;
        for table in self.row_filters.keys() {
            self.notes.insert(Note::new(
                Rule::Scopes,
                format!("the role's row filter on {table} applies under every scan of it"),
            ));
        }
        Ok(RewrittenQuery {
            plan: root.plan,
            releases: self.releases,
            notes: self.notes,
        })
    }

    fn rewrite(&mut self, plan: &LogicalPlan) -> Result<Node, EngineError> {
        self.depth += 1;
        if self.depth > MAX_PLAN_DEPTH {
            return Err(EngineError::Limit(
                "the query's plan is nested too deeply".to_string(),
            ));
        }
        let node = self.rewrite_node(plan);
        self.depth -= 1;
        node
    }

    fn rewrite_node(&mut self, plan: &LogicalPlan) -> Result<Node, EngineError> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if scan.table_name.schema() == Some("information_schema") {
                    // Catalog metadata of the role's own scoped catalog.
                    return Ok(Node {
                        plan: plan.clone(),
                        privacy: Privacy::Public,
                    });
                }
                let table = scan.table_name.table().to_string();
                let person_name = self.fresh_person();
                let node = person_lineage::ScanRewrite {
                    policy: self.policy,
                    data: self.data,
                    row_filters: self.row_filters,
                }
                .rewrite(scan, &person_name)?;
                if let Privacy::Private(_) = node.privacy {
                    let path: Vec<&str> = self
                        .policy
                        .path_to_person(&table)
                        .iter()
                        .map(|l| l.table.as_str())
                        .collect();
                    let text = if path.is_empty() {
                        format!("{table} holds the person {}", self.policy.person.column)
                    } else {
                        format!("{table} reaches the person through {}", path.join(" -> "))
                    };
                    self.notes.insert(Note::new(Rule::PersonLineage, text));
                }
                Ok(node)
            }
            LogicalPlan::Projection(projection) => self.projection(projection),
            LogicalPlan::Filter(filter) => self.filter(filter),
            LogicalPlan::Aggregate(aggregate) => self.aggregate(aggregate),
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Union(union) => self.union(union),
            LogicalPlan::SubqueryAlias(alias) => self.subquery_alias(alias),
            LogicalPlan::Window(window) => self.window(window),
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) | LogicalPlan::Repartition(_) => {
                self.pass_through(plan)
            }
            LogicalPlan::EmptyRelation(_) => Ok(Node {
                plan: plan.clone(),
                privacy: Privacy::Public,
            }),
            LogicalPlan::Values(values) => {
                for row in &values.values {
                    for expr in row {
                        side_channels::check_allowed(expr, &datafusion::common::DFSchema::empty())?;
                    }
                }
                Ok(Node {
                    plan: plan.clone(),
                    privacy: Privacy::Public,
                })
            }
            LogicalPlan::Distinct(_) | LogicalPlan::Unnest(_) => {
                let node = self.pass_through(plan)?;
                if let Privacy::Private(_) = node.privacy {
                    return Err(EngineError::refused(
                        Rule::PersonLineage,
                        "DISTINCT ON and UNNEST over private rows cannot be traced to persons",
                        "use GROUP BY",
                    ));
                }
                Ok(node)
            }
            LogicalPlan::RecursiveQuery(_) => Err(EngineError::refused(
                Rule::PersonLineage,
                "recursive queries cannot be traced to persons",
                "write the query without WITH RECURSIVE",
            )),
            LogicalPlan::Subquery(_) => Err(EngineError::refused(
                Rule::PersonLineage,
                "this subquery cannot be turned into a join, so its rows cannot be traced to persons",
                "write the subquery as a join",
            )),
            _ => Err(EngineError::refused(
                Rule::ReadOnly,
                "only queries are accepted: seuil never writes, changes settings or runs utility statements",
                "send a SELECT; use `seuil policy explain` to see how a query is rewritten",
            )),
        }
    }

    /// Sort, Limit and Repartition: same rows, same lineage.
    fn pass_through(&mut self, plan: &LogicalPlan) -> Result<Node, EngineError> {
        let inputs = plan.inputs();
        let [input] = inputs.as_slice() else {
            return Err(EngineError::internal("a node of one input has several"));
        };
        let input = self.rewrite(input)?;
        let mut exprs = Vec::new();
        for expr in plan.expressions() {
            if let Some(lineage) = input.privacy.lineage() {
                if matches!(plan, LogicalPlan::Sort(_)) {
                    identifiers::check_order(&expr, lineage)?;
                }
                identifiers::check_value(&expr, lineage)?;
            }
            exprs.push(side_channels::neutralise(expr, input.plan.schema())?);
        }
        let rebuilt = plan
            .with_new_exprs(exprs, vec![input.plan])
            .map_err(plan_fault)?;
        Ok(Node {
            plan: rebuilt,
            privacy: input.privacy,
        })
    }

    fn projection(&mut self, projection: &Projection) -> Result<Node, EngineError> {
        let input = self.rewrite(&projection.input)?;
        let mut exprs = Vec::with_capacity(projection.expr.len() + 1);
        for expr in &projection.expr {
            check_reserved_alias(expr)?;
            if let Some(lineage) = input.privacy.lineage() {
                identifiers::check_value(expr, lineage)?;
            }
            exprs.push(side_channels::neutralise_named(
                expr.clone(),
                input.plan.schema(),
            )?);
        }
        match input.privacy {
            Privacy::Private(lineage) => {
                exprs.push(col(lineage.person.clone()));
                let rebuilt =
                    Projection::try_new(exprs, Arc::new(input.plan)).map_err(plan_fault)?;
                let schema = Arc::clone(&rebuilt.schema);
                let mut renamed: HashMap<Column, Vec<Column>> = HashMap::new();
                for (i, expr) in rebuilt.expr.iter().enumerate() {
                    if let Some(column) = bare_column(expr) {
                        renamed
                            .entry(column.clone())
                            .or_default()
                            .push(output_column(&schema, i));
                    }
                }
                let person = output_column(&schema, rebuilt.expr.len() - 1);
                let mut output = lineage.through(&renamed, person);
                for (i, expr) in rebuilt.expr.iter().enumerate() {
                    if bare_column(expr).is_none()
                        && let Some(sensitivity) = crate::lineage::expr_sensitivity(expr, &lineage)
                    {
                        output
                            .sensitive
                            .insert(output_column(&schema, i), sensitivity);
                    }
                }
                Ok(Node {
                    privacy: Privacy::Private(Box::new(output)),
                    plan: LogicalPlan::Projection(rebuilt),
                })
            }
            privacy => Ok(Node {
                plan: LogicalPlan::Projection(
                    Projection::try_new(exprs, Arc::new(input.plan)).map_err(plan_fault)?,
                ),
                privacy,
            }),
        }
    }

    fn filter(&mut self, filter: &Filter) -> Result<Node, EngineError> {
        let input = self.rewrite(&filter.input)?;
        if let Some(lineage) = input.privacy.lineage() {
            identifiers::check_condition(&filter.predicate, lineage)?;
        }
        let predicate = side_channels::neutralise(filter.predicate.clone(), input.plan.schema())?;
        Ok(Node {
            plan: LogicalPlan::Filter(
                Filter::try_new(predicate, Arc::new(input.plan)).map_err(plan_fault)?,
            ),
            privacy: input.privacy,
        })
    }

    fn subquery_alias(&mut self, alias: &SubqueryAlias) -> Result<Node, EngineError> {
        if alias.alias.table().starts_with(RESERVED_PREFIX) {
            return Err(reserved_name(alias.alias.table()));
        }
        let input = self.rewrite(&alias.input)?;
        let rebuilt = SubqueryAlias::try_new(Arc::new(input.plan), alias.alias.clone())
            .map_err(plan_fault)?;
        let privacy = match input.privacy {
            Privacy::Private(lineage) => {
                Privacy::Private(Box::new(lineage.requalified(&rebuilt.schema)))
            }
            other => other,
        };
        Ok(Node {
            plan: LogicalPlan::SubqueryAlias(rebuilt),
            privacy,
        })
    }

    fn aggregate(&mut self, aggregate: &Aggregate) -> Result<Node, EngineError> {
        margins::check_grouping_size(&aggregate.group_expr)?;
        let input = self.rewrite(&aggregate.input)?;
        let lineage = match input.privacy {
            Privacy::Private(lineage) => lineage,
            privacy => {
                // Aggregates of public data or of released cells: nothing to protect.
                let group = named(&aggregate.group_expr, input.plan.schema())?;
                let aggr = named(&aggregate.aggr_expr, input.plan.schema())?;
                let rebuilt =
                    Aggregate::try_new(Arc::new(input.plan), group, aggr).map_err(plan_fault)?;
                return Ok(Node {
                    plan: LogicalPlan::Aggregate(rebuilt),
                    privacy,
                });
            }
        };
        let is_grouping_set = matches!(aggregate.group_expr.as_slice(), [Expr::GroupingSet(_)]);
        let grouped = person_lineage::bare_columns(&aggregate.group_expr);
        for expr in &aggregate.aggr_expr {
            check_reserved_alias(expr)?;
            identifiers::check_aggregate(expr, &lineage)?;
        }
        if !is_grouping_set && lineage.is_per_person(&grouped) {
            // A per-person step's group keys stay in the rows it outputs:
            // an expression of an identifier there is an identifier that
            // nothing would track.
            for expr in &aggregate.group_expr {
                identifiers::check_value(expr, &lineage)?;
            }
            return self.per_person_aggregate(aggregate, input.plan, *lineage);
        }

        // The released aggregate: its cells leave, so they must cover enough persons.
        for expr in &aggregate.group_expr {
            identifiers::check_released_group_key(expr, &lineage)?;
        }
        let group = named(&aggregate.group_expr, input.plan.schema())?;
        let aggr = named(&aggregate.aggr_expr, input.plan.schema())?;
        let id = self.releases.len();
        let rewritten = cells::RewrittenAggregate {
            input: input.plan,
            group_expr: group,
            aggr_expr: aggr,
        };
        let (step, replacement) = cells::release_aggregate(
            id,
            rewritten,
            aggregate,
            &lineage,
            self.role,
            self.needs.clone(),
        )?;
        if !step.layout.dominance.is_empty() {
            self.notes.insert(Note::new(
                Rule::Magnitudes,
                "each person's sum of a sensitive column is clamped to its bounds, and cells dominated by their largest persons are suppressed",
            ));
        }
        self.notes.insert(Note::new(
            Rule::MinPersons,
            format!(
                "each cell counts distinct persons; cells of fewer than {} persons are suppressed before HAVING, ORDER BY and LIMIT",
                self.role.min_persons
            ),
        ));
        self.releases.push(step);
        Ok(Node {
            plan: replacement,
            privacy: Privacy::Released,
        })
    }

    /// An aggregate grouped by a person key: one row per person (or finer),
    /// not released, so the person is kept as one more group key.
    fn per_person_aggregate(
        &mut self,
        aggregate: &Aggregate,
        input: LogicalPlan,
        lineage: PersonLineage,
    ) -> Result<Node, EngineError> {
        let mut group = named(&aggregate.group_expr, input.schema())?;
        group.push(col(lineage.person.clone()));
        let aggr = named(&aggregate.aggr_expr, input.schema())?;
        // The rules read the user's calls; the plan sums floating-point
        // values exactly, so that a person's sum does not depend on how the
        // person's rows were split over partitions.
        let exact = aggr
            .iter()
            .map(|expr| crate::functions::exact_float_sum(expr.clone(), input.schema()))
            .collect();
        let rebuilt = Aggregate::try_new(Arc::new(input), group, exact).map_err(plan_fault)?;
        let schema = Arc::clone(&rebuilt.schema);
        let mut renamed: HashMap<Column, Vec<Column>> = HashMap::new();
        for (i, expr) in rebuilt.group_expr.iter().enumerate() {
            if let Some(column) = bare_column(expr) {
                renamed
                    .entry(column.clone())
                    .or_default()
                    .push(output_column(&schema, i));
            }
        }
        let person = output_column(&schema, rebuilt.group_expr.len() - 1);
        let mut output = lineage.through(&renamed, person);
        let groups = rebuilt.group_expr.len();
        for (i, expr) in aggr.iter().enumerate() {
            if let Some(sensitivity) = magnitudes::per_person_sensitivity(expr, &lineage) {
                output
                    .sensitive
                    .insert(output_column(&schema, groups + i), sensitivity);
            }
        }
        self.notes.insert(Note::new(
            Rule::PersonLineage,
            "a per-person subquery keeps the person as a group key",
        ));
        Ok(Node {
            privacy: Privacy::Private(Box::new(output)),
            plan: LogicalPlan::Aggregate(rebuilt),
        })
    }

    fn window(&mut self, window: &Window) -> Result<Node, EngineError> {
        let input = self.rewrite(&window.input)?;
        if let Some(lineage) = input.privacy.lineage() {
            for expr in &window.window_expr {
                person_lineage::check_window(expr, lineage, self.policy)?;
            }
        }
        let exprs = named(&window.window_expr, input.plan.schema())?;
        let rebuilt = Window::try_new(exprs, Arc::new(input.plan)).map_err(plan_fault)?;
        let privacy = match input.privacy {
            Privacy::Private(mut lineage) => {
                let first = rebuilt.schema.fields().len() - rebuilt.window_expr.len();
                for (i, expr) in rebuilt.window_expr.iter().enumerate() {
                    if crate::lineage::expr_sensitivity(expr, &lineage).is_some() {
                        lineage
                            .sensitive
                            .insert(output_column(&rebuilt.schema, first + i), None);
                    }
                }
                Privacy::Private(lineage)
            }
            other => other,
        };
        Ok(Node {
            plan: LogicalPlan::Window(rebuilt),
            privacy,
        })
    }

    fn join(&mut self, join: &Join) -> Result<Node, EngineError> {
        let left = self.rewrite(&join.left)?;
        let right = self.rewrite(&join.right)?;
        let (left_lineage, right_lineage) = (left.privacy.lineage(), right.privacy.lineage());
        let mut on = Vec::with_capacity(join.on.len() + 1);
        for (l, r) in &join.on {
            identifiers::check_join_key(l, left_lineage, r, right_lineage)?;
            on.push((
                side_channels::neutralise(l.clone(), left.plan.schema())?,
                side_channels::neutralise(r.clone(), right.plan.schema())?,
            ));
        }
        let place = join
            .on
            .first()
            .and_then(|(l, _)| place_of(l))
            .or_else(|| join.filter.as_ref().and_then(place_of));
        if let Some(filter) = &join.filter {
            let combined = person_lineage::combined_lineage(left_lineage, right_lineage);
            if let Some(lineage) = &combined {
                identifiers::check_condition(filter, lineage)?;
            }
        }
        let filter = join
            .filter
            .clone()
            .map(|f| side_channels::neutralise(f, &join.schema))
            .transpose()?;
        let join_type = join.join_type;

        match (left.privacy.clone(), right.privacy.clone()) {
            (Privacy::Private(l), Privacy::Private(r)) => {
                person_lineage::check_join_on_person(&on, &l, &r, place, self.policy)?;
                // Same person on both sides, whatever else the keys say.
                on.push((col(l.person.clone()), col(r.person.clone())));
                let rebuilt = rebuild_join(join, left.plan, right.plan, on, filter)?;
                self.notes.insert(Note::new(
                    Rule::PersonLineage,
                    "joins of private tables also match on the person",
                ));
                match join_type {
                    JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => Ok(Node {
                        plan: rebuilt,
                        privacy: Privacy::Private(l),
                    }),
                    JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => Ok(Node {
                        plan: rebuilt,
                        privacy: Privacy::Private(r),
                    }),
                    _ => {
                        let person_name = self.fresh_person();
                        person_lineage::one_person_after_join(
                            rebuilt,
                            join_type,
                            &l,
                            &r,
                            &person_name,
                        )
                    }
                }
            }
            (Privacy::Private(l), other) => {
                if matches!(
                    join_type,
                    JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark
                ) {
                    return Err(filtered_by_private(place));
                }
                let _ = other;
                let rebuilt = rebuild_join(join, left.plan, right.plan, on, filter)?;
                Ok(Node {
                    plan: rebuilt,
                    privacy: Privacy::Private(l),
                })
            }
            (other, Privacy::Private(r)) => {
                if matches!(
                    join_type,
                    JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark
                ) {
                    return Err(filtered_by_private(place));
                }
                let _ = other;
                let rebuilt = rebuild_join(join, left.plan, right.plan, on, filter)?;
                Ok(Node {
                    plan: rebuilt,
                    privacy: Privacy::Private(r),
                })
            }
            (l, r) => {
                let privacy = if matches!(l, Privacy::Released) || matches!(r, Privacy::Released) {
                    Privacy::Released
                } else {
                    Privacy::Public
                };
                let rebuilt = rebuild_join(join, left.plan, right.plan, on, filter)?;
                Ok(Node {
                    plan: rebuilt,
                    privacy,
                })
            }
        }
    }

    fn union(&mut self, union: &Union) -> Result<Node, EngineError> {
        let inputs = union
            .inputs
            .iter()
            .map(|input| self.rewrite(input))
            .collect::<Result<Vec<_>, _>>()?;
        let person_type = inputs.iter().find_map(|n| {
            n.privacy.lineage().and_then(|l| {
                n.plan
                    .schema()
                    .field_with_qualified_name(l.person.relation.as_ref()?, &l.person.name)
                    .or_else(|_| n.plan.schema().field_with_unqualified_name(&l.person.name))
                    .ok()
                    .map(|f| f.data_type().clone())
            })
        });
        let Some(person_type) = person_type else {
            let privacy = if inputs
                .iter()
                .any(|n| matches!(n.privacy, Privacy::Released))
            {
                Privacy::Released
            } else {
                Privacy::Public
            };
            let plans = inputs.into_iter().map(|n| Arc::new(n.plan)).collect();
            let rebuilt = Union::try_new(plans).map_err(plan_fault)?;
            return Ok(Node {
                plan: LogicalPlan::Union(rebuilt),
                privacy,
            });
        };

        // Align every input as (user columns..., person) so that the union,
        // which matches columns by position, carries the person last.
        let person_name = self.fresh_person();
        let mut aligned = Vec::with_capacity(inputs.len());
        let mut identifier_positions: HashSet<usize> = HashSet::new();
        let mut sensitive_positions: HashMap<usize, Option<(f64, f64)>> = HashMap::new();
        let mut key_positions: Option<Vec<Vec<usize>>> = None;
        for node in inputs {
            let schema = Arc::clone(node.plan.schema());
            let lineage = node.privacy.lineage().cloned();
            let mut exprs = Vec::new();
            let mut position_of: HashMap<Column, usize> = HashMap::new();
            for i in 0..schema.fields().len() {
                let column = output_column(&schema, i);
                if lineage.as_ref().is_some_and(|l| l.person == column) {
                    continue;
                }
                if lineage.as_ref().is_some_and(|l| l.is_identifier(&column)) {
                    identifier_positions.insert(exprs.len());
                }
                if let Some(bounds) = lineage.as_ref().and_then(|l| l.sensitivity(&column)) {
                    let merged = match sensitive_positions.get(&exprs.len()) {
                        None => bounds,
                        Some(previous) => previous
                            .zip(bounds)
                            .map(|((a, b), (c, d))| (a.min(c), b.max(d))),
                    };
                    sensitive_positions.insert(exprs.len(), merged);
                }
                position_of.insert(column.clone(), exprs.len());
                exprs.push(Expr::Column(column));
            }
            let person_position = exprs.len();
            match &lineage {
                Some(l) => {
                    exprs.push(col(l.person.clone()).alias(&person_name));
                    let mut keys: Vec<Vec<usize>> = l
                        .keys
                        .iter()
                        .filter_map(|key| key.iter().map(|c| position_of.get(c).copied()).collect())
                        .collect();
                    keys.push(vec![person_position]);
                    key_positions = Some(match key_positions {
                        None => keys,
                        Some(previous) => {
                            previous.into_iter().filter(|k| keys.contains(k)).collect()
                        }
                    });
                }
                None => {
                    let null = ScalarValue::try_from(&person_type).map_err(plan_fault)?;
                    exprs.push(lit(null).alias(&person_name));
                }
            }
            aligned.push(Arc::new(LogicalPlan::Projection(
                Projection::try_new(exprs, Arc::new(node.plan)).map_err(plan_fault)?,
            )));
        }
        let rebuilt = Union::try_new(aligned).map_err(plan_fault)?;
        let schema = Arc::clone(&rebuilt.schema);
        let last = schema.fields().len() - 1;
        let lineage = PersonLineage {
            person: output_column(&schema, last),
            keys: key_positions
                .unwrap_or_default()
                .into_iter()
                .map(|key| key.into_iter().map(|i| output_column(&schema, i)).collect())
                .collect(),
            identifiers: identifier_positions
                .into_iter()
                .map(|i| output_column(&schema, i))
                .collect(),
            sensitive: sensitive_positions
                .into_iter()
                .map(|(i, bounds)| (output_column(&schema, i), bounds))
                .collect(),
        };
        Ok(Node {
            plan: LogicalPlan::Union(rebuilt),
            privacy: Privacy::Private(Box::new(lineage)),
        })
    }
}

/// Neutralises expressions that name output columns. Inside `ROLLUP`,
/// `CUBE` and `GROUPING SETS` each expression is neutralised and keeps its
/// own name.
fn named(exprs: &[Expr], schema: &datafusion::common::DFSchema) -> Result<Vec<Expr>, EngineError> {
    exprs
        .iter()
        .map(|e| match e {
            Expr::GroupingSet(set) => {
                let inner = |exprs: &Vec<Expr>| -> Result<Vec<Expr>, EngineError> {
                    exprs
                        .iter()
                        .map(|e| {
                            side_channels::neutralise_named(e.clone(), schema)
                                .map_err(EngineError::from)
                        })
                        .collect()
                };
                Ok(Expr::GroupingSet(match set {
                    GroupingSet::Rollup(exprs) => GroupingSet::Rollup(inner(exprs)?),
                    GroupingSet::Cube(exprs) => GroupingSet::Cube(inner(exprs)?),
                    GroupingSet::GroupingSets(sets) => {
                        GroupingSet::GroupingSets(sets.iter().map(inner).collect::<Result<_, _>>()?)
                    }
                }))
            }
            other => {
                side_channels::neutralise_named(other.clone(), schema).map_err(EngineError::from)
            }
        })
        .collect()
}

fn reserved_name(name: &str) -> EngineError {
    EngineError::InvalidQuery(format!(
        "the name {name} is reserved: names starting with {RESERVED_PREFIX} belong to seuil"
    ))
}

fn check_reserved_alias(expr: &Expr) -> Result<(), EngineError> {
    if let Expr::Alias(alias) = expr
        && alias.name.starts_with(RESERVED_PREFIX)
    {
        return Err(reserved_name(&alias.name));
    }
    Ok(())
}

fn filtered_by_private(place: Option<Place>) -> EngineError {
    EngineError::Refused(
        Refusal::new(
            Rule::AggregatesOnly,
            "rows of a public table filtered by the presence of private rows (IN or EXISTS over a private table) would reveal single persons' facts",
            "count the private rows instead: join and GROUP BY, then filter on the counts",
        )
        .at(place),
    )
}

fn rebuild_join(
    join: &Join,
    left: LogicalPlan,
    right: LogicalPlan,
    on: Vec<(Expr, Expr)>,
    filter: Option<Expr>,
) -> Result<LogicalPlan, EngineError> {
    Ok(LogicalPlan::Join(
        Join::try_new(
            Arc::new(left),
            Arc::new(right),
            on,
            filter,
            join.join_type,
            join.join_constraint,
            join.null_equality,
            join.null_aware,
        )
        .map_err(plan_fault)?,
    ))
}
