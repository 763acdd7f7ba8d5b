//! The cells plan of values that need persons' partial results: sums and
//! averages of sensitive columns, clamped per person (rule 6), and order
//! statistics over persons with the most extreme ones left out.
//!
//! One plan, one pass over the data, in levels:
//!
//! 1. per person and finest cell ([`PerPersonPlan::per_person`]): each
//!    value's partial result, each person's sum of a sensitive column clamped
//!    to its bounds, and for each contributing-rows condition the person's
//!    number of such rows;
//! 2. for `ROLLUP`, `CUBE` and `GROUPING SETS` only
//!    ([`PerPersonPlan::per_person_and_set`]): per person and released cell,
//!    the partials combined over the finest cells the person has in it, so
//!    that a total is exactly the sum of its cells;
//! 3. the ranks of persons within each cell, for trimmed order statistics
//!    ([`PerPersonPlan::ranked`]);
//! 4. per cell ([`PerPersonPlan::per_cell`]): the released values, the
//!    persons, the contributors of each value, and for each sensitive sum its
//!    total and largest per-person contributions (found by
//!    [`crate::functions::nth_largest`] in this same aggregate, without sorting the
//!    persons of each cell). Floating-point sums over persons are exact
//!    ([`crate::functions::exact_sum`]), so they do not depend on the order in
//!    which persons arrive;
//! 5. a projection to the user's columns, names and types
//!    ([`PerPersonPlan::output`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchemaRef};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::expr_fn::{bool_and, bool_or, count, max, median, min, sum};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::expr::{AggregateFunction, GroupingSet, Sort};
use datafusion::logical_expr::{
    Aggregate, Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, Operator, Projection,
    TryCast, col, lit, when,
};
use seuil_policies::Role;

use super::exprs::{average, binary, cast, with_function};
use super::layout::{CellsLayout, CellsNeeds, DominanceColumns, measure_layouts};
use super::measures::{Measure, OrderKind, Value};
use super::single_level::contributor_conditions;
use crate::error::place_of;
use crate::error::{EngineError, Refusal, Rule, plan_fault};
use crate::functions::nth_largest;
use crate::functions::{KnownAggregate, exact_float_sum, exact_sum};
use crate::lineage::PERSONS_COLUMN;
use crate::lineage::{PersonLineage, output_column};

/// How a level-1 partial combines at later levels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    Sum,
    Min,
    Max,
    Median,
    BoolAnd,
    BoolOr,
}

fn combine(expr: Expr, how: Combine) -> Expr {
    match how {
        Combine::Sum => sum(expr),
        Combine::Min => min(expr),
        Combine::Max => max(expr),
        Combine::Median => median(expr),
        Combine::BoolAnd => bool_and(expr),
        Combine::BoolOr => bool_or(expr),
    }
}

/// A partial column of level 1 and how to combine it.
struct Partial {
    expr: Expr,
    how: Combine,
    clamp: Option<(f64, f64)>,
}

/// How one user value is computed from its partials at the cell level.
#[derive(Clone, Copy)]
enum Final {
    /// The sum of partial `i` over persons.
    Summed(usize),
    /// Sum of partial `i` divided by the sum of partial `j`.
    Ratio(usize, usize),
    /// The `rank`-th largest (or smallest) of partial `i` over persons.
    Trimmed {
        partial: usize,
        rank: i64,
        descending: bool,
    },
    /// The median of partial `i` over persons (removing as many persons at
    /// each end leaves the median where it is).
    Median(usize),
}

/// The per-person relation between two levels: its plan, and where its
/// person and partials are.
struct PerPerson {
    plan: LogicalPlan,
    person: Column,
    partials: Vec<Column>,
    /// The cell's group columns (and, for grouping sets, the user's grouping id).
    cell_groups: Vec<Expr>,
    /// What tells cells apart for ranking: the group columns and, for
    /// grouping sets, level 2's own grouping id.
    rank_partition: Vec<Expr>,
}

/// The builder of one per-person cells plan.
pub(super) struct PerPersonPlan<'a> {
    input: LogicalPlan,
    values: &'a [Value],
    person: Column,
    role: &'a Role,
    needs: CellsNeeds,
    grouping_set: Option<GroupingSet>,
    distinct_groups: Vec<Expr>,
    partials: Vec<Partial>,
    finals: Vec<Final>,
    /// (value, partial) of each sensitive sum, for the dominance rules.
    dominance_partials: Vec<(usize, usize)>,
    /// The partial counting each contributing-rows condition's rows.
    contributor_partials: Vec<usize>,
    /// For each value, the condition of its contributing rows, if any.
    contributor_of: Vec<Option<usize>>,
}

fn refuse_mixed(value: &Value) -> EngineError {
    let name = match &value.call {
        Expr::Alias(alias) => alias.name.clone(),
        other => other.schema_name().to_string(),
    };
    EngineError::Refused(
        Refusal::new(
            Rule::Magnitudes,
            format!(
                "{name} cannot be computed together with sums of sensitive columns or order statistics"
            ),
            "run it in a separate query",
        )
        .at(place_of(&value.call)),
    )
}

/// A count of the rows that `rows` keeps.
fn count_rows(rows: Expr) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        count_udaf(),
        vec![lit(1i64)],
        false,
        Some(Box::new(rows)),
        Vec::new(),
        None,
    ))
}

/// The explicit sets of a grouping set, in DataFusion's order.
fn expand_sets(set: &GroupingSet) -> Vec<Vec<Expr>> {
    match set {
        GroupingSet::Rollup(exprs) => (0..=exprs.len())
            .rev()
            .map(|n| exprs[..n].to_vec())
            .collect(),
        GroupingSet::Cube(exprs) => {
            let n = exprs.len();
            (0..(1usize << n))
                .map(|mask| {
                    exprs
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << (n - 1 - i)) == 0)
                        .map(|(_, e)| e.clone())
                        .collect()
                })
                .collect()
        }
        GroupingSet::GroupingSets(sets) => sets.clone(),
    }
}

impl<'a> PerPersonPlan<'a> {
    /// Resolves each value into level-1 partials and a final computation.
    pub(super) fn new(
        input: LogicalPlan,
        group_expr: Vec<Expr>,
        values: &'a [Value],
        lineage: &PersonLineage,
        role: &'a Role,
        needs: CellsNeeds,
    ) -> Result<Self, EngineError> {
        let grouping_set = match group_expr.as_slice() {
            [Expr::GroupingSet(set)] => Some(set.clone()),
            _ => None,
        };
        let distinct_groups: Vec<Expr> = match &grouping_set {
            Some(set) => set.distinct_expr().into_iter().cloned().collect(),
            None => group_expr,
        };
        let (conditions, contributor_of) = contributor_conditions(values, &input);
        let mut plan = Self {
            input,
            values,
            person: lineage.person.clone(),
            role,
            needs,
            grouping_set,
            distinct_groups,
            partials: Vec::new(),
            finals: Vec::new(),
            dominance_partials: Vec::new(),
            contributor_partials: Vec::new(),
            contributor_of,
        };
        for (i, value) in values.iter().enumerate() {
            let final_ = plan.final_of(i, value)?;
            plan.finals.push(final_);
        }
        for rows in conditions {
            let partial = plan.add(count_rows(rows), Combine::Sum, None);
            plan.contributor_partials.push(partial);
        }
        Ok(plan)
    }

    /// Adds a partial, or finds the same one added already (`SUM(x)` next
    /// to `AVG(x)` clamp the same sums): DataFusion's planning would give
    /// two copies' common parts one name twice.
    fn add(&mut self, expr: Expr, how: Combine, clamp: Option<(f64, f64)>) -> usize {
        if let Some(known) = self
            .partials
            .iter()
            .position(|p| p.expr == expr && p.how == how && p.clamp == clamp)
        {
            return known;
        }
        self.partials.push(Partial { expr, how, clamp });
        self.partials.len() - 1
    }

    /// The partials of value `i` and how they make its released value.
    fn final_of(&mut self, i: usize, value: &Value) -> Result<Final, EngineError> {
        let rank = i64::from(self.role.order_statistics.exclude) + 1;
        Ok(match &value.measure {
            Measure::Count { argument } => {
                let argument = argument.clone().unwrap_or_else(|| lit(1i64));
                let p = self.add(
                    with_function(value, count_udaf(), vec![argument], false),
                    Combine::Sum,
                    None,
                );
                Final::Summed(p)
            }
            // Distinct values of a person key never span two persons, so
            // per-person distinct counts add up.
            Measure::CountPersons { argument } => {
                let p = self.add(
                    with_function(value, count_udaf(), vec![argument.clone()], true),
                    Combine::Sum,
                    None,
                );
                Final::Summed(p)
            }
            Measure::Sum { argument, bounds } => {
                let p = self.add(
                    with_function(value, sum_udaf(), vec![argument.clone()], false),
                    Combine::Sum,
                    *bounds,
                );
                if bounds.is_some() {
                    self.dominance_partials.push((i, p));
                }
                Final::Summed(p)
            }
            Measure::Avg { argument, bounds } => {
                let s = self.add(
                    with_function(value, sum_udaf(), vec![argument.clone()], false),
                    Combine::Sum,
                    *bounds,
                );
                if bounds.is_some() {
                    self.dominance_partials.push((i, s));
                }
                let c = self.add(
                    with_function(value, count_udaf(), vec![argument.clone()], false),
                    Combine::Sum,
                    None,
                );
                Final::Ratio(s, c)
            }
            // Each person's own statistic first; then, over persons, the
            // statistic with the most extreme persons left out.
            Measure::Order {
                kind,
                argument,
                function,
            } => {
                let (udaf, how) = match *function {
                    KnownAggregate::Min => (
                        datafusion::functions_aggregate::min_max::min_udaf(),
                        Combine::Min,
                    ),
                    KnownAggregate::Max => (
                        datafusion::functions_aggregate::min_max::max_udaf(),
                        Combine::Max,
                    ),
                    KnownAggregate::BoolAnd => (
                        datafusion::functions_aggregate::bool_and_or::bool_and_udaf(),
                        Combine::BoolAnd,
                    ),
                    KnownAggregate::BoolOr => (
                        datafusion::functions_aggregate::bool_and_or::bool_or_udaf(),
                        Combine::BoolOr,
                    ),
                    _ => (
                        datafusion::functions_aggregate::median::median_udaf(),
                        Combine::Median,
                    ),
                };
                let p = self.add(
                    with_function(value, udaf, vec![argument.clone()], false),
                    how,
                    None,
                );
                match kind {
                    OrderKind::Min => Final::Trimmed {
                        partial: p,
                        rank,
                        descending: false,
                    },
                    OrderKind::Max => Final::Trimmed {
                        partial: p,
                        rank,
                        descending: true,
                    },
                    OrderKind::Median => Final::Median(p),
                }
            }
            Measure::Direct { .. } => return Err(refuse_mixed(value)),
        })
    }

    /// Builds the whole plan; `original_schema` is the user's aggregate's.
    pub(super) fn build(
        mut self,
        original_schema: &DFSchemaRef,
    ) -> Result<(LogicalPlan, CellsLayout), EngineError> {
        let mut per_person = self.per_person()?;
        if self.grouping_set.is_some() {
            per_person = self.per_person_and_set(per_person, original_schema)?;
        }
        let (per_person, rank_columns) = self.ranked(per_person)?;
        let cells = self.per_cell(per_person, &rank_columns)?;
        self.output(cells, original_schema)
    }

    /// Level 1: per person and finest cell, with sensitive sums clamped.
    fn per_person(&mut self) -> Result<PerPerson, EngineError> {
        let mut groups = self.distinct_groups.clone();
        groups.push(col(self.person.clone()));
        // A person's floating-point sums are exact too: the person's rows
        // may come split over partitions, differently for each file layout.
        let aggregates: Vec<Expr> = self
            .partials
            .iter()
            .enumerate()
            .map(|(i, p)| {
                exact_float_sum(p.expr.clone(), self.input.schema())
                    .alias(format!("__seuil_partial_{i}"))
            })
            .collect();
        let input = std::mem::replace(
            &mut self.input,
            LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            }),
        );
        let level1 = Aggregate::try_new(Arc::new(input), groups, aggregates).map_err(plan_fault)?;
        let schema = Arc::clone(&level1.schema);
        let n = self.distinct_groups.len();
        let mut exprs: Vec<Expr> = (0..=n)
            .map(|i| Expr::Column(output_column(&schema, i)))
            .collect();
        for (i, partial) in self.partials.iter().enumerate() {
            let column = output_column(&schema, n + 1 + i);
            exprs.push(match partial.clamp {
                None => Expr::Column(column),
                Some((lower, upper)) => {
                    let data_type = schema.field(n + 1 + i).data_type().clone();
                    let value = Expr::Column(column.clone());
                    let clamped = when(value.clone().lt(lit(lower)), lit(lower))
                        .when(value.clone().gt(lit(upper)), lit(upper))
                        .otherwise(value)
                        .map_err(plan_fault)?;
                    Expr::TryCast(TryCast::new(Box::new(clamped), data_type))
                        .alias(column.name.clone())
                }
            });
        }
        let clamped = Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(level1)))
            .map_err(plan_fault)?;
        let schema = Arc::clone(&clamped.schema);
        let cell_groups: Vec<Expr> = (0..n)
            .map(|i| Expr::Column(output_column(&schema, i)))
            .collect();
        Ok(PerPerson {
            person: output_column(&schema, n),
            partials: (0..self.partials.len())
                .map(|i| output_column(&schema, n + 1 + i))
                .collect(),
            rank_partition: cell_groups.clone(),
            cell_groups,
            plan: LogicalPlan::Projection(clamped),
        })
    }

    /// Level 2, grouping sets only: per person and released cell.
    fn per_person_and_set(
        &self,
        level1: PerPerson,
        original_schema: &DFSchemaRef,
    ) -> Result<PerPerson, EngineError> {
        let Some(set) = &self.grouping_set else {
            return Err(EngineError::internal(
                "level 2 of a plan without grouping sets",
            ));
        };
        let groups = self.distinct_groups.len();
        let group_columns: Vec<Expr> = level1.cell_groups.clone();
        let mut sets = Vec::new();
        for exprs in expand_sets(set) {
            let mut with_person = vec![Expr::Column(level1.person.clone())];
            for expr in &exprs {
                let position = self
                    .distinct_groups
                    .iter()
                    .position(|d| d == expr)
                    .ok_or_else(|| {
                        EngineError::internal(
                            "a grouping set's expression is not among its distinct expressions",
                        )
                    })?;
                with_person.push(group_columns[position].clone());
            }
            sets.push(with_person);
        }
        let aggregates: Vec<Expr> = self
            .partials
            .iter()
            .zip(&level1.partials)
            .enumerate()
            .map(|(i, (p, c))| {
                combine(Expr::Column(c.clone()), p.how).alias(format!("__seuil_partial_{i}"))
            })
            .collect();
        let level2 = Aggregate::try_new(
            Arc::new(level1.plan),
            vec![Expr::GroupingSet(GroupingSet::GroupingSets(sets))],
            aggregates,
        )
        .map_err(plan_fault)?;
        let schema = Arc::clone(&level2.schema);
        // Level 2's distinct expressions are the person, then the user's in
        // their order; its grouping id is the user's with the person's bit
        // (always 0) inserted above the user's bits.
        let level2_groups = groups + 1;
        let gid = Expr::Column(output_column(&schema, level2_groups));
        let gid_type = original_schema.field(groups).data_type().clone();
        let mask = if groups >= 64 {
            u64::MAX
        } else {
            (1u64 << groups) - 1
        };
        let ordinal = binary(
            binary(
                cast(gid.clone(), DataType::UInt64),
                Operator::BitwiseShiftRight,
                lit(groups as u64 + 1),
            ),
            Operator::BitwiseShiftLeft,
            lit(groups as u64),
        );
        let user_gid = binary(
            ordinal,
            Operator::BitwiseOr,
            binary(
                cast(gid.clone(), DataType::UInt64),
                Operator::BitwiseAnd,
                lit(mask),
            ),
        );
        let mut cell_groups: Vec<Expr> = (1..level2_groups)
            .map(|i| Expr::Column(output_column(&schema, i)))
            .collect();
        // Rows of different sets never share a cell: level 2's grouping id
        // tells them apart.
        let mut rank_partition = cell_groups.clone();
        rank_partition.push(gid);
        cell_groups.push(cast(user_gid, gid_type).alias(Aggregate::INTERNAL_GROUPING_ID));
        Ok(PerPerson {
            person: output_column(&schema, 0),
            partials: (0..self.partials.len())
                .map(|i| output_column(&schema, level2_groups + 1 + i))
                .collect(),
            cell_groups,
            rank_partition,
            plan: LogicalPlan::Aggregate(level2),
        })
    }

    /// The ranks of persons within each cell, for trimmed order statistics:
    /// for each value, the name of its rank column, if it needs one.
    /// (Windows rather than ordered aggregates: one aggregate cannot order
    /// by several expressions. The largest contributions of the dominance
    /// rules do not need them: see [`crate::functions::nth_largest`].)
    fn ranked(
        &self,
        mut per_person: PerPerson,
    ) -> Result<(PerPerson, Vec<Option<String>>), EngineError> {
        let mut windows: Vec<Expr> = Vec::new();
        let mut ranked: Vec<(usize, bool, String)> = Vec::new();
        let mut rank_columns = Vec::with_capacity(self.finals.len());
        for final_ in &self.finals {
            let Final::Trimmed {
                partial,
                descending,
                ..
            } = *final_
            else {
                rank_columns.push(None);
                continue;
            };
            if let Some((_, _, name)) = ranked
                .iter()
                .find(|(p, d, _)| *p == partial && *d == descending)
            {
                rank_columns.push(Some(name.clone()));
                continue;
            }
            let value = Expr::Column(per_person.partials[partial].clone());
            // Persons without a value (NULL) rank last either way.
            let rank = row_number()
                .partition_by(per_person.rank_partition.clone())
                .order_by(vec![Sort::new(value, !descending, false)])
                .build()
                .map_err(plan_fault)?;
            // Window plans take bare window expressions: the rank column is
            // named after its expression.
            let name = rank.schema_name().to_string();
            windows.push(rank);
            ranked.push((partial, descending, name.clone()));
            rank_columns.push(Some(name));
        }
        if !windows.is_empty() {
            // One window node per ordering, as DataFusion executes them.
            per_person.plan =
                LogicalPlanBuilder::window_plan(per_person.plan, windows).map_err(plan_fault)?;
        }
        Ok((per_person, rank_columns))
    }

    /// Level 3: per cell.
    fn per_cell(
        &self,
        per_person: PerPerson,
        rank_columns: &[Option<String>],
    ) -> Result<Aggregate, EngineError> {
        let column = |p: usize| Expr::Column(per_person.partials[p].clone());
        let is_float = |p: usize| {
            per_person
                .plan
                .schema()
                .qualified_field_from_column(&per_person.partials[p])
                .is_ok_and(|(_, f)| f.data_type() == &DataType::Float64)
        };
        // Floating-point sums over a cell's persons are exact, rounded once:
        // persons reach this aggregate in an order that varies from run to
        // run, and a plain sum's last digits would vary with it. Integer and
        // decimal sums are exact already.
        let sum_over_persons = |p: usize| {
            if is_float(p) {
                exact_sum(column(p))
            } else {
                sum(column(p))
            }
        };
        let mut aggregates: Vec<Expr> = Vec::new();
        for (i, final_) in self.finals.iter().enumerate() {
            let expr = match *final_ {
                Final::Summed(p) => sum_over_persons(p),
                Final::Ratio(s, c) => {
                    // An average: the sum over persons and the count,
                    // divided in the projection above.
                    aggregates.push(sum_over_persons(s).alias(format!("__seuil_sum_{i}")));
                    aggregates.push(sum_over_persons(c).alias(format!("__seuil_count_{i}")));
                    continue;
                }
                Final::Trimmed { partial, rank, .. } => {
                    let Some(rank_column) = &rank_columns[i] else {
                        return Err(EngineError::internal(
                            "a trimmed statistic without its rank",
                        ));
                    };
                    // The value of the person of that rank (NULL for others).
                    max(when(
                        col(Column::from_name(rank_column)).eq(lit(rank as u64)),
                        column(partial),
                    )
                    .end()
                    .map_err(plan_fault)?)
                }
                Final::Median(p) => median(column(p)),
            };
            aggregates.push(expr.alias(format!("__seuil_value_{i}")));
        }
        aggregates.push(count(Expr::Column(per_person.person.clone())).alias(PERSONS_COLUMN));
        for (c, partial) in self.contributor_partials.iter().enumerate() {
            aggregates.push(
                count_rows(column(*partial).gt(lit(0i64)))
                    .alias(format!("__seuil_contributors_{c}")),
            );
        }
        let largest = self.needs.largest;
        for (measure, partial) in self.dominance_partials.iter().filter(|_| largest > 0) {
            aggregates.push(sum_over_persons(*partial).alias(format!("__seuil_total_{measure}")));
            // The largest contributions are taken as Float64, as the release
            // step reads them: the cast keeps the order, so the n-th largest
            // of the cast values is the cast of the n-th largest.
            let contribution = if is_float(*partial) {
                column(*partial)
            } else {
                cast(column(*partial), DataType::Float64)
            };
            for rank in 1..=largest {
                aggregates.push(
                    nth_largest(contribution.clone(), rank)
                        .alias(format!("__seuil_top{rank}_{measure}")),
                );
            }
        }
        Aggregate::try_new(
            Arc::new(per_person.plan),
            per_person.cell_groups.clone(),
            aggregates,
        )
        .map_err(plan_fault)
    }

    /// The final projection: the user's columns in order and types, then
    /// persons, contributors and the dominance inputs.
    fn output(
        &self,
        cells: Aggregate,
        original_schema: &DFSchemaRef,
    ) -> Result<(LogicalPlan, CellsLayout), EngineError> {
        let cells_schema = Arc::clone(&cells.schema);
        let group_len = cells.group_expr.len();
        let named = |name: String| col(Column::from_name(name));
        let mut exprs: Vec<Expr> = (0..group_len)
            .map(|i| Expr::Column(output_column(&cells_schema, i)))
            .collect();
        let first_value = original_schema.fields().len() - self.values.len();
        for (i, final_) in self.finals.iter().enumerate() {
            let field = original_schema.field(first_value + i);
            let value = match final_ {
                Final::Ratio(..) => average(
                    named(format!("__seuil_sum_{i}")),
                    named(format!("__seuil_count_{i}")),
                ),
                _ => named(format!("__seuil_value_{i}")),
            };
            exprs.push(
                Expr::TryCast(TryCast::new(Box::new(value), field.data_type().clone()))
                    .alias(field.name()),
            );
        }
        let output_columns = exprs.len();
        let persons = output_columns;
        exprs.push(named(PERSONS_COLUMN.to_string()));
        for c in 0..self.contributor_partials.len() {
            exprs.push(named(format!("__seuil_contributors_{c}")));
        }
        let mut dominance = Vec::new();
        let largest = self.needs.largest;
        for (measure, _) in self.dominance_partials.iter().filter(|_| largest > 0) {
            exprs.push(named(format!("__seuil_total_{measure}")));
            let total = exprs.len() - 1;
            let mut tops = Vec::new();
            for rank in 1..=largest {
                exprs.push(named(format!("__seuil_top{rank}_{measure}")));
                tops.push(exprs.len() - 1);
            }
            dominance.push(DominanceColumns {
                measure: *measure,
                total,
                largest: tops,
            });
        }
        let measures = measure_layouts(self.values, &self.contributor_of, persons);
        let projection = Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(cells)))
            .map_err(plan_fault)?;
        let groups = self.distinct_groups.len();
        Ok((
            LogicalPlan::Projection(projection),
            CellsLayout {
                output_columns,
                group_columns: group_len,
                grouping: self.grouping_set.as_ref().map(|_| (groups, groups)),
                measures,
                persons,
                dominance,
                noisy: Vec::new(),
            },
        ))
    }
}
