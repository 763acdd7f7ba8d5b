//! A reference implementation of the release rules, for the property tests:
//! it computes, from the raw data and independently of the engine's plans,
//! every cell a generated query ([`crate::grammar`]) can release, with its
//! persons, the persons who contribute to each value, each value as the
//! policy defines it (sums clamped per person, order statistics with the
//! most extreme persons left out) and whether a dominance rule suppresses
//! the cell.
//!
//! Only the per-person partial results are computed by plain DataFusion
//! (one `GROUP BY cell, person` query per released aggregate); everything
//! across persons is computed here.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::grammar::{Kind, Part, ValueSpec};
use crate::oracle::run_raw;

/// The release parameters of a role.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `min_persons`.
    pub k: usize,
    /// Order statistics leave out this many persons at the extreme.
    pub exclude: usize,
    /// The (n, k%) dominance rule.
    pub dominance: Option<(usize, f64)>,
    /// The p% rule.
    pub p_percent: Option<f64>,
}

/// A released value as the reference computes it.
#[derive(Debug, Clone, PartialEq)]
pub enum RefValue {
    /// No value (no rows, or no person left after trimming).
    Null,
    /// A count, sum or average.
    Number(f64),
    /// An order statistic, of the column's own type.
    Scalar(ScalarValue),
}

/// One cell of a released aggregate.
#[derive(Debug, Clone)]
pub struct RefCell {
    /// The cell's key as the result shows it (tag, then group values,
    /// `None` for NULL), and its keys for tables with margins (`None`
    /// where the cell aggregates over the dimension).
    pub key: Vec<Option<String>>,
    /// Distinct persons in the cell.
    pub persons: usize,
    /// Rows in the cell.
    pub rows: i64,
    /// Each value and its contributing persons.
    pub values: Vec<(RefValue, usize)>,
    /// True when a dominance rule suppresses the cell.
    pub dominated: bool,
}

impl RefCell {
    /// True when the cell may be released (before secondary suppression).
    pub fn eligible(&self, rules: &Rules) -> bool {
        self.persons >= rules.k && !self.dominated
    }
}

fn partial_sql(value: &ValueSpec, j: usize) -> String {
    let filter = value
        .filter
        .as_ref()
        .map_or(String::new(), |f| format!(" FILTER (WHERE {f})"));
    let arg = &value.argument;
    let main = match value.kind {
        Kind::CountRows => format!("count(*){filter}"),
        Kind::Count => format!("count({arg}){filter}"),
        Kind::CountPersons => format!("count(DISTINCT {arg}){filter}"),
        Kind::Sum | Kind::SensitiveSum(..) | Kind::Avg | Kind::SensitiveAvg(..) => {
            format!("sum({arg}){filter}")
        }
        Kind::Min => format!("min({arg}){filter}"),
        Kind::Max => format!("max({arg}){filter}"),
        Kind::Median => format!("median({arg}){filter}"),
    };
    // Only averages need their count of values (and an aggregate written
    // twice trips DataFusion's planner of IN subqueries).
    let count = match value.kind {
        Kind::Avg | Kind::SensitiveAvg(..) => format!("count({arg}){filter}"),
        _ => "CAST(0 AS BIGINT)".to_string(),
    };
    format!(
        "{main} AS v{j}, {count} AS w{j}, count(*) FILTER (WHERE {}) AS c{j}",
        value.contributes()
    )
}

/// Per person and finest cell: the rows, partials and contributions.
struct PersonRow {
    keys: Vec<Option<String>>,
    person: String,
    rows: i64,
    partials: Vec<ScalarValue>,
    counts: Vec<i64>,
    contributions: Vec<i64>,
}

fn text(value: &ScalarValue) -> Option<String> {
    (!value.is_null()).then(|| value.to_string())
}

fn int(value: &ScalarValue) -> i64 {
    match value {
        ScalarValue::Int64(Some(n)) => *n,
        other if other.is_null() => 0,
        other => other.to_string().parse().unwrap_or(0),
    }
}

fn number(value: &ScalarValue) -> Option<f64> {
    if value.is_null() {
        return None;
    }
    value
        .cast_to(&datafusion::arrow::datatypes::DataType::Float64)
        .ok()
        .and_then(|v| match v {
            ScalarValue::Float64(x) => x,
            _ => None,
        })
}

fn person_rows(batches: &[RecordBatch], groups: usize, values: usize) -> Vec<PersonRow> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let at = |c: usize| ScalarValue::try_from_array(batch.column(c), row).expect("value");
            let keys = (0..groups).map(|c| text(&at(c))).collect();
            let person = at(groups).to_string();
            let first = groups + 2;
            rows.push(PersonRow {
                keys,
                person,
                rows: int(&at(groups + 1)),
                partials: (0..values).map(|j| at(first + 3 * j)).collect(),
                counts: (0..values).map(|j| int(&at(first + 3 * j + 1))).collect(),
                contributions: (0..values).map(|j| int(&at(first + 3 * j + 2))).collect(),
            });
        }
    }
    rows
}

/// The persons of one cell: their rows and combined partials.
type PersonsOfCell = HashMap<String, (i64, Vec<Combined>)>;

/// One person's combined partial for one value in one cell.
#[derive(Debug, Clone, Default)]
struct Combined {
    sum: Option<f64>,
    count: i64,
    extreme: Option<ScalarValue>,
    medians: Vec<f64>,
    contributions: i64,
}

fn clamp(value: f64, bounds: Option<(f64, f64)>) -> f64 {
    match bounds {
        Some((lo, hi)) => value.clamp(lo, hi),
        None => value,
    }
}

fn combine(into: &mut Combined, value: &ValueSpec, partial: &ScalarValue, count: i64, c: i64) {
    into.contributions += c;
    into.count += count;
    match value.kind {
        Kind::Min | Kind::Max => {
            if !partial.is_null() {
                let keep = match &into.extreme {
                    None => true,
                    Some(current) => {
                        let order = partial.partial_cmp(current).unwrap_or(Ordering::Equal);
                        (value.kind == Kind::Min && order == Ordering::Less)
                            || (value.kind == Kind::Max && order == Ordering::Greater)
                    }
                };
                if keep {
                    into.extreme = Some(partial.clone());
                }
            }
        }
        Kind::Median => {
            if let Some(v) = number(partial) {
                into.medians.push(v);
            }
        }
        kind => {
            // Sensitive sums are clamped per person and finest cell.
            if let Some(v) = number(partial) {
                into.sum = Some(into.sum.unwrap_or(0.0) + clamp(v, kind.bounds()));
            }
        }
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n.is_multiple_of(2) {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    } else {
        values[n / 2]
    })
}

/// The released value of one cell from its persons' combined partials, and
/// whether a dominance rule suppresses it.
fn cell_value(value: &ValueSpec, persons: &[&Combined], rules: &Rules) -> (RefValue, usize, bool) {
    let contributors = persons.iter().filter(|p| p.contributions > 0).count();
    let released = match value.kind {
        Kind::CountRows | Kind::Count | Kind::CountPersons => {
            RefValue::Number(persons.iter().filter_map(|p| p.sum).sum())
        }
        Kind::Sum | Kind::SensitiveSum(..) => persons
            .iter()
            .filter_map(|p| p.sum)
            .reduce(|a, b| a + b)
            .map_or(RefValue::Null, RefValue::Number),
        Kind::Avg | Kind::SensitiveAvg(..) => {
            let count: i64 = persons.iter().map(|p| p.count).sum();
            let sum: f64 = persons.iter().filter_map(|p| p.sum).sum();
            if count == 0 {
                RefValue::Null
            } else {
                RefValue::Number(sum / count as f64)
            }
        }
        Kind::Min | Kind::Max => {
            let mut extremes: Vec<&ScalarValue> =
                persons.iter().filter_map(|p| p.extreme.as_ref()).collect();
            extremes.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
            if value.kind == Kind::Max {
                extremes.reverse();
            }
            extremes
                .get(rules.exclude)
                .map_or(RefValue::Null, |v| RefValue::Scalar((*v).clone()))
        }
        Kind::Median => {
            let mut medians: Vec<f64> = persons
                .iter()
                .filter_map(|p| median(&mut p.medians.clone()))
                .collect();
            median(&mut medians).map_or(RefValue::Null, RefValue::Number)
        }
    };
    let dominated = value.kind.bounds().is_some() && contributors >= rules.k && {
        let mut contributions: Vec<f64> =
            persons.iter().filter_map(|p| p.sum).map(f64::abs).collect();
        contributions.sort_by(|a, b| b.total_cmp(a));
        let total: f64 = contributions.iter().sum();
        let top = |n: usize| contributions.iter().take(n).sum::<f64>();
        total > 0.0
            && (rules
                .dominance
                .is_some_and(|(n, k)| top(n) > k / 100.0 * total)
                || rules.p_percent.is_some_and(|p| {
                    let first = contributions.first().copied().unwrap_or(0.0);
                    let second = contributions.get(1).copied().unwrap_or(0.0);
                    total - first - second < p / 100.0 * first
                }))
    };
    (released, contributors, dominated)
}

/// Every cell the part can release, with what the rules say of it.
pub async fn cells(raw: &SessionContext, part: &Part, rules: &Rules) -> Vec<RefCell> {
    let groups = part.groups.len();
    let mut select: Vec<String> = part
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{g} AS k{i}"))
        .collect();
    select.push(format!("{} AS person__", part.person));
    select.push("count(*) AS rows__".into());
    for (j, value) in part.values.iter().enumerate() {
        select.push(partial_sql(value, j));
    }
    let where_clause = if part.conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", part.conditions.join(" AND "))
    };
    let sql = format!(
        "{}SELECT {} FROM {}{where_clause} GROUP BY {}",
        part.with,
        select.join(", "),
        part.raw_from,
        (1..=groups + 1)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows = person_rows(&run_raw(raw, &sql).await, groups, part.values.len());
    let sets: Vec<Vec<usize>> = part
        .sets
        .clone()
        .unwrap_or_else(|| vec![(0..groups).collect()]);
    let mut out = Vec::new();
    for set in &sets {
        // (cell key) -> person -> (rows, combined partials)
        let mut by_cell: BTreeMap<Vec<Option<String>>, PersonsOfCell> = BTreeMap::new();
        for row in &rows {
            let key: Vec<Option<String>> = (0..part.output_groups)
                .map(|g| {
                    if set.contains(&g) {
                        row.keys[g].clone()
                    } else {
                        None
                    }
                })
                .collect();
            let entry = by_cell
                .entry(key)
                .or_default()
                .entry(row.person.clone())
                .or_insert_with(|| (0, vec![Combined::default(); part.values.len()]));
            entry.0 += row.rows;
            for (j, value) in part.values.iter().enumerate() {
                combine(
                    &mut entry.1[j],
                    value,
                    &row.partials[j],
                    row.counts[j],
                    row.contributions[j],
                );
            }
        }
        for (key, persons) in by_cell {
            let mut values = Vec::new();
            let mut dominated = false;
            for (j, value) in part.values.iter().enumerate() {
                let combined: Vec<&Combined> = persons.values().map(|(_, c)| &c[j]).collect();
                let (v, contributors, d) = cell_value(value, &combined, rules);
                dominated |= d;
                values.push((v, contributors));
            }
            let mut full_key: Vec<Option<String>> =
                part.tag.iter().map(|t| Some(t.to_string())).collect();
            full_key.extend(key);
            out.push(RefCell {
                key: full_key,
                persons: persons.len(),
                rows: persons.values().map(|(r, _)| r).sum(),
                values,
                dominated,
            });
        }
    }
    out
}
