//! The values of a released aggregate, resolved once from the user's
//! aggregate calls: what each one computes, and which rows and persons
//! actually contribute to it.
//!
//! Every later step (the cells plan, the release step, rounding, margins)
//! reads a [`Measure`], never a function name. Resolving also applies the
//! rules that refuse a value outright:
//!
//! - rule 2: `DISTINCT` counts values, and a value may be held by fewer than
//!   `min_persons` persons, so only `COUNT(DISTINCT person key)` (which
//!   counts persons) is accepted;
//! - rule 6: sums and averages of sensitive columns need bounds; order
//!   statistics (`MIN`, `MAX`, `MEDIAN`, `BOOL_AND`, `BOOL_OR`) of any
//!   private column release one person's value, so they need the role's
//!   leave, and are then trimmed;
//! - rounding: a role that rounds rounds every released value, so a value
//!   that is not a number cannot be released to it.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Expr, ExprSchemable, lit};
use seuil_policies::Role;

use crate::error::place_of;
use crate::error::{EngineError, Refusal, Rule};
use crate::functions::KnownAggregate;
use crate::lineage::{PersonLineage, bare_column, expr_sensitivity};

/// Which order statistic, as it is trimmed over persons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKind {
    /// `MIN` (and `BOOL_AND`, the minimum of booleans).
    Min,
    /// `MAX` (and `BOOL_OR`).
    Max,
    /// `MEDIAN`.
    Median,
}

/// What one released value computes.
#[derive(Debug, Clone)]
pub enum Measure {
    /// `COUNT(*)` (no argument) or `COUNT(x)`.
    Count {
        /// The counted expression; `None` counts rows.
        argument: Option<Expr>,
    },
    /// `COUNT(DISTINCT k)` of a person key: counts persons (or their ids).
    CountPersons {
        /// The person key.
        argument: Expr,
    },
    /// `SUM(x)`; `bounds` clamp each person's contribution when `x` is a
    /// sensitive column.
    Sum {
        /// The summed expression.
        argument: Expr,
        /// The sensitive column's bounds.
        bounds: Option<(f64, f64)>,
    },
    /// `AVG(x)`, as a sum over a count of rows.
    Avg {
        /// The averaged expression.
        argument: Expr,
        /// The sensitive column's bounds.
        bounds: Option<(f64, f64)>,
    },
    /// An order statistic of a private column, trimmed over persons.
    Order {
        /// Which one.
        kind: OrderKind,
        /// Its argument.
        argument: Expr,
        /// The user's function (`min`, `bool_or`, ...), for combining the
        /// per-person partials.
        function: KnownAggregate,
    },
    /// Computed directly by the user's call, over the cell's rows: the
    /// spread statistics (`STDDEV`, `VAR`) of columns that are not
    /// sensitive, `GROUPING(...)`, and aggregates of constants.
    Direct {
        /// The call's argument, if it reads a column.
        argument: Option<Expr>,
        /// True for `GROUPING(...)`, which describes the cell, not persons.
        structural: bool,
    },
}

/// One value of a released aggregate.
#[derive(Debug, Clone)]
pub struct Value {
    /// What it computes.
    pub measure: Measure,
    /// Its `FILTER (WHERE ...)`, if any.
    pub filter: Option<Expr>,
    /// The user's call as written (neutralised, with its output name).
    pub call: Expr,
}

/// How a released value combines across cells, for rounding and margins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureKind {
    /// A count of rows or values: additive.
    Count,
    /// A sum of a column that is not sensitive: additive.
    Sum,
    /// A clamped sum of a sensitive column: additive, dominance applies.
    SensitiveSum,
    /// Anything else (averages, order statistics, person counts, spreads).
    Other,
}

impl MeasureKind {
    /// True when a total is the sum of its cells for this measure.
    pub fn is_additive(self) -> bool {
        matches!(
            self,
            MeasureKind::Count | MeasureKind::Sum | MeasureKind::SensitiveSum
        )
    }
}

impl Value {
    /// How the value combines across cells.
    pub fn kind(&self) -> MeasureKind {
        match &self.measure {
            Measure::Count { .. } => MeasureKind::Count,
            Measure::Sum { bounds: None, .. } => MeasureKind::Sum,
            Measure::Sum {
                bounds: Some(_), ..
            } => MeasureKind::SensitiveSum,
            _ => MeasureKind::Other,
        }
    }

    /// True for `GROUPING(...)`, which describes the cell, not persons.
    pub fn is_structural(&self) -> bool {
        matches!(
            self.measure,
            Measure::Direct {
                structural: true,
                ..
            }
        )
    }

    /// True when the value needs persons' partial results (a sum clamped per
    /// person, or an order statistic over persons) rather than rows.
    pub fn needs_persons(&self) -> bool {
        matches!(
            self.measure,
            Measure::Sum {
                bounds: Some(_),
                ..
            } | Measure::Avg {
                bounds: Some(_),
                ..
            } | Measure::Order { .. }
        )
    }

    /// The rows of a cell that contribute to this value (rule 2, read per
    /// value): those its FILTER keeps and whose argument is not NULL; for
    /// sums, averages and spreads also not zero, since a zero changes
    /// nothing (`SUM(CASE WHEN ... THEN x ELSE 0 END)` is computed from the
    /// persons of the CASE only). `None` when every row of the cell does.
    pub fn contributing_rows(&self, input: &DFSchema) -> Option<Expr> {
        let (argument, zero_counts) = match &self.measure {
            Measure::Count { argument } => (argument.as_ref(), true),
            Measure::CountPersons { argument } | Measure::Order { argument, .. } => {
                (Some(argument), true)
            }
            Measure::Sum { argument, .. } | Measure::Avg { argument, .. } => {
                (Some(argument), false)
            }
            Measure::Direct {
                structural: true, ..
            } => return None,
            Measure::Direct { argument, .. } => (argument.as_ref(), false),
        };
        let mut parts: Vec<Expr> = self.filter.iter().cloned().collect();
        if let Some(argument) = argument {
            if argument.nullable(input).unwrap_or(true) {
                parts.push(argument.clone().is_not_null());
            }
            if !zero_counts
                && let Ok(zero) = argument
                    .get_type(input)
                    .and_then(|t| ScalarValue::new_zero(&t))
            {
                parts.push(argument.clone().not_eq(lit(zero)));
            }
        }
        parts.into_iter().reduce(Expr::and)
    }
}

fn strip_alias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(alias) => strip_alias(&alias.expr),
        other => other,
    }
}

fn reads_a_column(expr: &Expr) -> bool {
    let mut found = false;
    let _ = expr.apply(|e| {
        if matches!(e, Expr::Column(_)) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn refusal(rule: Rule, message: String, hint: &str, expr: &Expr) -> EngineError {
    EngineError::Refused(Refusal::new(rule, message, hint).at(place_of(expr)))
}

/// True when `expr` is a person key of the relation: counting its distinct
/// values counts persons (or their source ids), never other values.
fn is_person_key(expr: &Expr, lineage: &PersonLineage) -> bool {
    bare_column(expr).is_some_and(|column| {
        *column == lineage.person
            || lineage
                .keys
                .iter()
                .any(|key| key.len() == 1 && key[0] == *column)
    })
}

/// Resolves one aggregate call of a released aggregate over `input` rows
/// of `lineage`, for `role`. `output` is the schema the call's value takes in
/// the user's plan.
pub fn resolve(
    call: &Expr,
    lineage: &PersonLineage,
    role: &Role,
    input: &DFSchema,
) -> Result<Value, EngineError> {
    let inner = strip_alias(call);
    let Expr::AggregateFunction(function) = inner else {
        return Err(EngineError::internal(
            "a released aggregate's value is not an aggregate function",
        ));
    };
    let measure = resolve_measure(function, inner, lineage, role)?;
    if role.rounding.is_some_and(|base| base > 1) {
        let numeric = inner
            .get_type(input)
            .map(|t| t.is_numeric())
            .unwrap_or(false);
        if !numeric
            && !matches!(
                measure,
                Measure::Direct {
                    structural: true,
                    ..
                }
            )
        {
            return Err(refusal(
                Rule::Rounding,
                format!(
                    "{} is not a number, and role {} rounds every released value",
                    function.func.name(),
                    role.name
                ),
                "release counts, sums and averages, which are rounded",
                inner,
            ));
        }
    }
    Ok(Value {
        measure,
        filter: function.params.filter.as_deref().cloned(),
        call: call.clone(),
    })
}

fn resolve_measure(
    function: &AggregateFunction,
    call: &Expr,
    lineage: &PersonLineage,
    role: &Role,
) -> Result<Measure, EngineError> {
    let arguments = &function.params.args;
    let argument = arguments.first().cloned();
    let parts = CallParts {
        name: function.func.name(),
        call,
        argument_text: argument.as_ref().map(|a| a.to_string()).unwrap_or_default(),
        sensitivity: arguments.iter().find_map(|a| expr_sensitivity(a, lineage)),
        distinct: function.params.distinct,
        // An argument without a column (`count(*)` is `count(1)`) is the
        // same for every row.
        column_argument: argument.clone().filter(reads_a_column),
        argument,
    };
    let known = KnownAggregate::of(function);
    match known {
        KnownAggregate::Count if parts.distinct => match &parts.column_argument {
            Some(a) if arguments.len() == 1 && is_person_key(a, lineage) => {
                Ok(Measure::CountPersons {
                    argument: a.clone(),
                })
            }
            _ => Err(refusal(
                Rule::MinPersons,
                format!(
                    "COUNT(DISTINCT {}) counts values, and a value may be held by fewer persons than the threshold",
                    parts.argument_text
                ),
                "count persons with COUNT(DISTINCT <a person key>), or count the values that enough persons hold: SELECT count(*) FROM (SELECT <column> FROM <table> GROUP BY <column>)",
                call,
            )),
        },
        KnownAggregate::Count => Ok(Measure::Count {
            argument: parts.column_argument,
        }),
        KnownAggregate::Sum | KnownAggregate::Avg => parts.sum(known),
        order if order.is_order_statistic() => parts.order_statistic(order, role),
        KnownAggregate::Grouping => Ok(Measure::Direct {
            argument: None,
            structural: true,
        }),
        _ => parts.other(),
    }
}

/// What resolving one aggregate call reads of it.
struct CallParts<'a> {
    /// The function's name, as DataFusion resolved it.
    name: &'a str,
    call: &'a Expr,
    argument: Option<Expr>,
    argument_text: String,
    /// The sensitivity of the first argument that reads a sensitive column.
    sensitivity: Option<Option<(f64, f64)>>,
    distinct: bool,
    /// The first argument, when it reads a column.
    column_argument: Option<Expr>,
}

impl CallParts<'_> {
    /// SUM and AVG: clamped to the bounds of a sensitive column, refused
    /// over expressions of one (no bounds to clamp to) and over DISTINCT.
    fn sum(self, known: KnownAggregate) -> Result<Measure, EngineError> {
        let name = self.name;
        let argument_text = &self.argument_text;
        if self.distinct {
            return Err(refusal(
                Rule::MinPersons,
                format!(
                    "{}(DISTINCT {argument_text}) adds distinct values, and a value may be held by fewer persons than the threshold",
                    name.to_uppercase()
                ),
                "drop DISTINCT",
                self.call,
            ));
        }
        let Some(argument) = self.argument else {
            return Err(EngineError::internal("a sum without an argument"));
        };
        let bounds = match self.sensitivity {
            None => None,
            Some(Some(bounds)) => Some(bounds),
            Some(None) => {
                return Err(refusal(
                    Rule::Magnitudes,
                    format!(
                        "{name}({argument_text}) sums an expression of a sensitive column, whose contributions have no bounds to clamp to"
                    ),
                    "sum the sensitive column itself, and select rows with WHERE or FILTER instead of CASE",
                    self.call,
                ));
            }
        };
        Ok(if known == KnownAggregate::Sum {
            Measure::Sum { argument, bounds }
        } else {
            Measure::Avg { argument, bounds }
        })
    }

    /// MIN, MAX, MEDIAN (and BOOL_AND, BOOL_OR, the minimum and maximum of
    /// booleans) of a private column: refused unless the role allows order
    /// statistics.
    fn order_statistic(self, known: KnownAggregate, role: &Role) -> Result<Measure, EngineError> {
        let Some(argument) = self.column_argument else {
            return Ok(Measure::Direct {
                argument: None,
                structural: false,
            });
        };
        if !role.order_statistics.allowed {
            let class = if self.sensitivity.is_some() {
                "a sensitive"
            } else {
                "a private"
            };
            return Err(refusal(
                Rule::Magnitudes,
                format!(
                    "{}({}) of {class} column would release one person's value",
                    self.name.to_uppercase(),
                    self.argument_text
                ),
                "count or average instead, or ask for a role whose policy allows order statistics",
                self.call,
            ));
        }
        let kind = match known {
            KnownAggregate::Min | KnownAggregate::BoolAnd => OrderKind::Min,
            KnownAggregate::Max | KnownAggregate::BoolOr => OrderKind::Max,
            _ => OrderKind::Median,
        };
        Ok(Measure::Order {
            kind,
            argument,
            function: known,
        })
    }

    /// Any other aggregate: computed as written, refused over a sensitive
    /// column or over DISTINCT values.
    fn other(self) -> Result<Measure, EngineError> {
        let (name, argument_text) = (self.name, &self.argument_text);
        if self.sensitivity.is_some() {
            return Err(refusal(
                Rule::Magnitudes,
                format!("{name}({argument_text}) of a sensitive column cannot be protected"),
                "SUM, AVG, and (when the role allows them) MIN, MAX and MEDIAN are released for sensitive columns",
                self.call,
            ));
        }
        if self.distinct {
            return Err(refusal(
                Rule::MinPersons,
                format!(
                    "{name}(DISTINCT {argument_text}) works on distinct values, and a value may be held by fewer persons than the threshold"
                ),
                "drop DISTINCT",
                self.call,
            ));
        }
        Ok(Measure::Direct {
            argument: self.column_argument,
            structural: false,
        })
    }
}
