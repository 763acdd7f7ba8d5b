//! From rule-file text to a [`Policy`], reporting every problem with its place.
//!
//! Checking goes in three steps, each reporting all it finds: the TOML syntax
//! and the format's keys and types (serde, with spans); the policy's own
//! consistency (paths to the person, classes, roles); and, when the data's
//! schema is given, the match between the policy and the data.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use sqlparser::ast::{Expr as SqlExpr, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::data_schema::DataSchema;
use crate::diagnostics::{Diagnostics, PolicyError, PolicySource};
use crate::model::*;
use crate::raw::*;

/// Parses and checks a policy; with `data`, also checks it against the data's
/// schema. Returns the policy when there is no error, and every diagnostic
/// (warnings included) either way.
pub fn check(source: &PolicySource, data: Option<&DataSchema>) -> (Option<Policy>, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let raw: RawPolicy = match toml::from_str(&source.text) {
        Ok(raw) => raw,
        Err(error) => {
            diagnostics.error(error.span(), tidy_toml_message(error.message()));
            return (None, diagnostics);
        }
    };
    let policy = build(&raw, &mut diagnostics);
    if let Some(data) = data {
        check_against_data(&raw, data, &mut diagnostics);
    }
    if diagnostics.has_errors() {
        (None, diagnostics)
    } else {
        (policy, diagnostics)
    }
}

/// Like [`check`], but an error when the policy has any error. Warnings are
/// returned with the policy.
pub fn load(
    source: &PolicySource,
    data: Option<&DataSchema>,
) -> Result<(Policy, Diagnostics), PolicyError> {
    match check(source, data) {
        (Some(policy), warnings) => Ok((policy, warnings)),
        (None, diagnostics) => Err(PolicyError {
            source_name: source.name.clone(),
            rendered: diagnostics.render(source),
            diagnostics,
        }),
    }
}

/// serde's messages end with a newline and sometimes a long list of expected
/// keys; keep them on one line.
fn tidy_toml_message(message: &str) -> String {
    message.trim().replace('\n', " ")
}

fn build(raw: &RawPolicy, out: &mut Diagnostics) -> Option<Policy> {
    let header = raw.policy.value();
    let floor = header
        .min_persons_floor
        .as_ref()
        .map_or(DEFAULT_MIN_PERSONS_FLOOR, |f| *f.value());
    if floor == 0 {
        out.error(
            header.min_persons_floor.as_ref().and_then(Located::at),
            "min_persons_floor must be at least 1",
        );
    }
    if header.name.value().trim().is_empty() {
        out.error(header.name.at(), "the policy name must not be empty");
    }

    let tables = build_tables(raw, out);
    check_person(raw, &tables, out);
    check_paths(raw, &tables, out);
    let roles = build_roles(raw, &tables, floor, out);

    let person = raw.person.value();
    Some(Policy {
        name: header.name.value().clone(),
        version: header.version.value().clone(),
        min_persons_floor: floor,
        person: PersonColumn {
            table: person.table.value().clone(),
            column: person.column.value().clone(),
        },
        tables,
        roles,
    })
}

fn build_tables(raw: &RawPolicy, out: &mut Diagnostics) -> BTreeMap<String, TablePolicy> {
    let mut tables = BTreeMap::new();
    for (name, table) in &raw.tables {
        let table = table.value();
        let kind = match table.kind.value() {
            RawTableKind::Private => TableKind::Private,
            RawTableKind::Public => TableKind::Public,
        };
        if table.columns.is_empty() {
            out.error(
                name.at(),
                format!("table {} lists no columns", name.value()),
            );
        }
        let mut columns = BTreeMap::new();
        for (column, spec) in &table.columns {
            let spec = spec.value();
            let class = match spec.class.value() {
                RawColumnClass::Identifier => ColumnClass::Identifier,
                RawColumnClass::QuasiIdentifier => ColumnClass::QuasiIdentifier,
                RawColumnClass::Sensitive => ColumnClass::Sensitive,
                RawColumnClass::Public => ColumnClass::Public,
            };
            let bounds = match (&spec.bounds, class) {
                (Some(bounds), ColumnClass::Sensitive) => {
                    let [lower, upper] = *bounds.value();
                    if !(lower.is_finite() && upper.is_finite() && lower < upper) {
                        out.error(
                            bounds.at(),
                            format!(
                                "bounds of {}.{} must be two finite numbers, lower first",
                                name.value(),
                                column.value()
                            ),
                        );
                    }
                    Some((lower, upper))
                }
                (None, ColumnClass::Sensitive) => {
                    out.error(
                        column.at(),
                        format!(
                            "sensitive column {}.{} needs bounds = [lower, upper] to clamp each person's contribution",
                            name.value(),
                            column.value()
                        ),
                    );
                    None
                }
                (Some(bounds), _) => {
                    out.error(
                        bounds.at(),
                        format!(
                            "bounds only apply to sensitive columns; {}.{} is {}",
                            name.value(),
                            column.value(),
                            class.as_str()
                        ),
                    );
                    None
                }
                (None, _) => None,
            };
            if kind == TableKind::Public && class == ColumnClass::Identifier {
                out.error(
                    column.at(),
                    format!(
                        "public table {} cannot have an identifier column ({}): a table with identifiers holds persons and must be private",
                        name.value(),
                        column.value()
                    ),
                );
            }
            columns.insert(column.value().clone(), ColumnPolicy { class, bounds });
        }
        let person_via = table.person_via.as_ref().map(|link| {
            let link = link.value();
            Link {
                table: link.table.value().clone(),
                columns: link
                    .columns
                    .value()
                    .iter()
                    .map(|c| c.value().clone())
                    .collect(),
                references: link
                    .references
                    .value()
                    .iter()
                    .map(|c| c.value().clone())
                    .collect(),
            }
        });
        tables.insert(
            name.value().clone(),
            TablePolicy {
                name: name.value().clone(),
                kind,
                person_via,
                columns,
            },
        );
    }
    tables
}

fn check_person(raw: &RawPolicy, tables: &BTreeMap<String, TablePolicy>, out: &mut Diagnostics) {
    let person = raw.person.value();
    let Some(table) = tables.get(person.table.value()) else {
        out.error(
            person.table.at(),
            format!(
                "the person table {} is not listed under [tables]",
                person.table.value()
            ),
        );
        return;
    };
    if table.kind != TableKind::Private {
        out.error(
            person.table.at(),
            format!("the person table {} must be private", person.table.value()),
        );
    }
    match table.columns.get(person.column.value()) {
        None => out.error(
            person.column.at(),
            format!(
                "the person column {} is not a column of {}",
                person.column.value(),
                person.table.value()
            ),
        ),
        Some(column) if column.class != ColumnClass::Identifier => out.error(
            person.column.at(),
            format!(
                "the person column {}.{} must be classed identifier, not {}",
                person.table.value(),
                person.column.value(),
                column.class.as_str()
            ),
        ),
        Some(_) => {}
    }
    if let Some(link) = &raw_table(raw, person.table.value()).and_then(|t| t.person_via.as_ref()) {
        out.error(
            link.at(),
            "the person table holds the person itself and takes no person_via",
        );
    }
}

fn raw_table<'a>(raw: &'a RawPolicy, name: &str) -> Option<&'a RawTable> {
    raw.tables
        .iter()
        .find(|(key, _)| key.value() == name)
        .map(|(_, table)| table.value())
}

/// Every private table must reach the person table by following `person_via`
/// links, each of which must reference existing columns of a private table
/// with matching arity; a class must not leak along a link (a column that
/// references an identifier is an identifier too).
fn check_paths(raw: &RawPolicy, tables: &BTreeMap<String, TablePolicy>, out: &mut Diagnostics) {
    let person_table = raw.person.value().table.value();
    for (name, table) in &raw.tables {
        let table = table.value();
        let is_person_table = name.value() == person_table;
        match (table.kind.value(), &table.person_via) {
            (RawTableKind::Public, Some(link)) => {
                out.error(
                    link.at(),
                    format!(
                        "public table {} has no person and takes no person_via",
                        name.value()
                    ),
                );
                continue;
            }
            (RawTableKind::Private, None) if !is_person_table => {
                out.error(
                    name.at(),
                    format!(
                        "private table {} needs person_via = {{ table = ..., columns = [...], references = [...] }} leading towards the person table {person_table}",
                        name.value()
                    ),
                );
                continue;
            }
            _ => {}
        }
        let Some(link) = &table.person_via else {
            continue;
        };
        let link_value = link.value();
        let target_name = link_value.table.value();
        let Some(target) = tables.get(target_name) else {
            out.error(
                link_value.table.at(),
                format!(
                    "person_via of {} names unknown table {target_name}",
                    name.value()
                ),
            );
            continue;
        };
        if target.kind != TableKind::Private {
            out.error(
                link_value.table.at(),
                format!(
                    "person_via of {} leads to public table {target_name}, which holds no person",
                    name.value()
                ),
            );
        }
        let columns = link_value.columns.value();
        let references = link_value.references.value();
        if columns.is_empty() {
            out.error(
                link_value.columns.at(),
                "person_via needs at least one column",
            );
        }
        if columns.len() != references.len() {
            out.error(
                link_value.references.at(),
                format!(
                    "person_via of {} matches {} column(s) with {} reference(s); they pair up in order",
                    name.value(),
                    columns.len(),
                    references.len()
                ),
            );
        }
        let own = tables.get(name.value());
        for column in columns {
            if own.is_some_and(|t| !t.columns.contains_key(column.value())) {
                out.error(
                    column.at(),
                    format!(
                        "person_via column {} is not a column of {}",
                        column.value(),
                        name.value()
                    ),
                );
            }
        }
        for (position, reference) in references.iter().enumerate() {
            let Some(referenced) = target.columns.get(reference.value()) else {
                out.error(
                    reference.at(),
                    format!(
                        "person_via reference {} is not a column of {target_name}",
                        reference.value()
                    ),
                );
                continue;
            };
            let Some(column) = columns.get(position) else {
                continue;
            };
            let own_class = own
                .and_then(|t| t.columns.get(column.value()))
                .map(|c| c.class);
            if referenced.class == ColumnClass::Identifier
                && own_class.is_some_and(|c| c != ColumnClass::Identifier)
            {
                out.error(
                    column.at(),
                    format!(
                        "{}.{} references identifier {target_name}.{} and must be classed identifier, not {}",
                        name.value(),
                        column.value(),
                        reference.value(),
                        own_class.map_or("unclassed", ColumnClass::as_str)
                    ),
                );
            }
        }
    }

    // Follow each private table's chain; report a cycle or a dead end once, at
    // the table where the walk started.
    for (name, table) in &raw.tables {
        if *table.value().kind.value() != RawTableKind::Private || name.value() == person_table {
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut current = name.value().as_str();
        let mut chain = vec![current.to_string()];
        loop {
            if current == person_table {
                break;
            }
            if !seen.insert(current.to_string()) {
                out.error(
                    name.at(),
                    format!(
                        "person_via of {} goes round in a cycle ({}) and never reaches the person table {person_table}",
                        name.value(),
                        chain.join(" -> ")
                    ),
                );
                break;
            }
            match tables.get(current).and_then(|t| t.person_via.as_ref()) {
                Some(link) if tables.contains_key(&link.table) => {
                    current = &link.table;
                    chain.push(current.to_string());
                }
                // The missing link or unknown table was reported above.
                _ => break,
            }
        }
    }
}

fn build_roles(
    raw: &RawPolicy,
    tables: &BTreeMap<String, TablePolicy>,
    floor: u32,
    out: &mut Diagnostics,
) -> BTreeMap<String, Role> {
    let mut roles = BTreeMap::new();
    if raw.roles.is_empty() {
        out.error(
            raw.policy.at(),
            "the policy defines no [roles.NAME]; nobody could query",
        );
    }
    for (name, role) in &raw.roles {
        let role = role.value();
        let mode = match role.mode.as_ref().map(|m| *m.value()) {
            None | Some(RawMode::Threshold) => Mode::Threshold,
            Some(RawMode::Dp) => Mode::Dp,
        };
        let min_persons = role
            .min_persons
            .as_ref()
            .map_or(DEFAULT_MIN_PERSONS, |m| *m.value());
        if min_persons < floor {
            out.error(
                role.min_persons.as_ref().and_then(Located::at),
                format!(
                    "role {} sets min_persons = {min_persons}, below the policy's floor of {floor}",
                    name.value()
                ),
            );
        }
        let dominance = role.dominance.as_ref().map(|d| {
            let value = d.value();
            let (n, k) = (*value.n.value(), *value.k.value());
            if n == 0 {
                out.error(value.n.at(), "dominance n must be at least 1");
            }
            if !(k > 0.0 && k < 100.0) {
                out.error(
                    value.k.at(),
                    "dominance k is a percentage strictly between 0 and 100",
                );
            }
            Dominance { n, k }
        });
        let p_percent = role.p_percent.as_ref().map(|p| {
            let value = *p.value();
            if !(value > 0.0 && value < 100.0) {
                out.error(
                    p.at(),
                    "p_percent is a percentage strictly between 0 and 100",
                );
            }
            value
        });
        let rounding = role.rounding.as_ref().map(|r| {
            if *r.value() == 0 {
                out.error(r.at(), "rounding is a base of at least 1 (for example 5)");
            }
            *r.value()
        });
        let protection_percent =
            role.protection_percent
                .as_ref()
                .map_or(DEFAULT_PROTECTION_PERCENT, |p| {
                    let value = *p.value();
                    if !(value > 0.0 && value <= 100.0) {
                        out.error(p.at(), "protection_percent is a percentage in (0, 100]");
                    }
                    value
                });
        let order_statistics = role
            .order_statistics
            .as_ref()
            .map(|o| OrderStatistics {
                allowed: *o.value().allowed.value(),
                exclude: o.value().exclude.as_ref().map_or(0, |e| *e.value()),
            })
            .unwrap_or_default();
        let dp = build_dp(name, role, mode, out);
        let scopes = build_scopes(name, role, tables, out);
        roles.insert(
            name.value().clone(),
            Role {
                name: name.value().clone(),
                mode,
                min_persons,
                dominance,
                p_percent,
                rounding,
                order_statistics,
                protection_percent,
                dp,
                tables: scopes,
            },
        );
    }
    roles
}

fn build_dp(
    name: &Located<String>,
    role: &RawRole,
    mode: Mode,
    out: &mut Diagnostics,
) -> Option<DpSettings> {
    match (&role.dp, mode) {
        (None, Mode::Dp) => {
            out.error(
                name.at(),
                format!(
                    "role {} is in dp mode and needs a [roles.{}.dp] section with epsilon_budget and epsilon_per_query",
                    name.value(),
                    name.value()
                ),
            );
            None
        }
        (Some(dp), Mode::Threshold) => {
            out.error(
                dp.at(),
                format!(
                    "role {} is in threshold mode; dp settings only apply with mode = \"dp\"",
                    name.value()
                ),
            );
            None
        }
        (None, Mode::Threshold) => None,
        (Some(dp), Mode::Dp) => {
            let dp = dp.value();
            let budget = *dp.epsilon_budget.value();
            let per_query = *dp.epsilon_per_query.value();
            if !(budget.is_finite() && budget > 0.0) {
                out.error(
                    dp.epsilon_budget.at(),
                    "epsilon_budget must be a positive number",
                );
            }
            if !(per_query.is_finite() && per_query > 0.0 && per_query <= budget) {
                out.error(
                    dp.epsilon_per_query.at(),
                    "epsilon_per_query must be positive and at most epsilon_budget",
                );
            }
            let delta = dp.delta.as_ref().map_or(1e-7, |d| *d.value());
            if !(delta > 0.0 && delta < 1e-3) {
                out.error(
                    dp.delta.as_ref().and_then(Located::at),
                    "delta must be positive and small (below 1e-3)",
                );
            }
            let max_groups_per_person = dp.max_groups_per_person.as_ref().map_or(1, |m| *m.value());
            if max_groups_per_person == 0 {
                out.error(
                    dp.max_groups_per_person.as_ref().and_then(Located::at),
                    "max_groups_per_person must be at least 1",
                );
            }
            let max_rows_per_cell = dp.max_rows_per_cell.as_ref().map_or(1, |m| *m.value());
            if max_rows_per_cell == 0 {
                out.error(
                    dp.max_rows_per_cell.as_ref().and_then(Located::at),
                    "max_rows_per_cell must be at least 1",
                );
            }
            let project_epsilon_budget = dp.project_epsilon_budget.as_ref().map(|b| *b.value());
            if let Some(project) = project_epsilon_budget
                && !(project.is_finite() && project >= per_query)
            {
                out.error(
                    dp.project_epsilon_budget.as_ref().and_then(Located::at),
                    "project_epsilon_budget must be a number of at least epsilon_per_query",
                );
            }
            let delta_budget = dp.delta_budget.as_ref().map(|b| *b.value());
            if let Some(total) = delta_budget
                && !(total.is_finite() && total >= delta && total < 1.0)
            {
                out.error(
                    dp.delta_budget.as_ref().and_then(Located::at),
                    "delta_budget must be at least delta and below 1",
                );
            }
            Some(DpSettings {
                epsilon_budget: budget,
                epsilon_per_query: per_query,
                delta,
                max_groups_per_person,
                max_rows_per_cell,
                project_epsilon_budget,
                delta_budget,
            })
        }
    }
}

fn build_scopes(
    role_name: &Located<String>,
    role: &RawRole,
    tables: &BTreeMap<String, TablePolicy>,
    out: &mut Diagnostics,
) -> BTreeMap<String, TableScope> {
    let mut scopes = BTreeMap::new();
    if role.tables.is_empty() {
        out.warning(
            role_name.at(),
            format!(
                "role {} lists no [roles.{}.tables.NAME]; it can query nothing",
                role_name.value(),
                role_name.value()
            ),
        );
    }
    for (table_name, scope) in &role.tables {
        let scope = scope.value();
        let Some(table) = tables.get(table_name.value()) else {
            out.error(
                table_name.at(),
                format!(
                    "role {} is given table {}, which the policy does not list under [tables]",
                    role_name.value(),
                    table_name.value()
                ),
            );
            continue;
        };
        let columns: BTreeSet<String> = match &scope.columns {
            None => table.columns.keys().cloned().collect(),
            Some(listed) => {
                if listed.value().is_empty() {
                    out.error(listed.at(), "an empty column list gives the role nothing of the table; remove the table instead");
                }
                let mut columns = BTreeSet::new();
                for column in listed.value() {
                    if !table.columns.contains_key(column.value()) {
                        out.error(
                            column.at(),
                            format!(
                                "role {} is given column {}.{}, which the policy does not list",
                                role_name.value(),
                                table_name.value(),
                                column.value()
                            ),
                        );
                    } else if !columns.insert(column.value().clone()) {
                        out.error(
                            column.at(),
                            format!("column {} is listed twice", column.value()),
                        );
                    }
                }
                columns
            }
        };
        let row_filter = scope.row_filter.as_ref().map(|filter| {
            check_row_filter(filter, table, out);
            filter.value().clone()
        });
        scopes.insert(
            table_name.value().clone(),
            TableScope {
                columns,
                row_filter,
            },
        );
    }
    scopes
}

/// A row filter must be one SQL condition over the table's own columns.
fn check_row_filter(filter: &Located<String>, table: &TablePolicy, out: &mut Diagnostics) {
    let text = filter.value();
    let span = value_span(filter);
    let dialect = GenericDialect {};
    let parsed = Parser::new(&dialect)
        .with_recursion_limit(64)
        .try_with_sql(text)
        .and_then(|mut parser| {
            let expr = parser.parse_expr()?;
            match parser.peek_token().token {
                Token::EOF => Ok(expr),
                other => Err(sqlparser::parser::ParserError::ParserError(format!(
                    "unexpected {other} after the condition"
                ))),
            }
        });
    let expr = match parsed {
        Ok(expr) => expr,
        Err(error) => {
            out.error(
                Some(span),
                format!(
                    "row_filter of {} is not a SQL condition: {error}",
                    table.name
                ),
            );
            return;
        }
    };
    let mut names = IdentifierCollector::default();
    let _ = expr.visit(&mut names);
    for name in names.0 {
        if !table.columns.contains_key(&name) {
            out.error(
                Some(value_span(filter)),
                format!(
                    "row_filter of {} uses {name}, which is not a column of {} in the policy",
                    table.name, table.name
                ),
            );
        }
    }
}

/// The span of a string value without its quotes, so that the column points at
/// the condition itself.
fn value_span(value: &Located<String>) -> Range<usize> {
    let span = value.span();
    (span.start + 1).min(span.end)..span.end
}

#[derive(Default)]
struct IdentifierCollector(BTreeSet<String>);

impl Visitor for IdentifierCollector {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &SqlExpr) -> std::ops::ControlFlow<()> {
        match expr {
            SqlExpr::Identifier(ident) => {
                self.0.insert(ident.value.to_lowercase());
            }
            SqlExpr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    self.0.insert(last.value.to_lowercase());
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    }
}

fn check_against_data(raw: &RawPolicy, data: &DataSchema, out: &mut Diagnostics) {
    for (name, table) in &raw.tables {
        let Some(data_columns) = data.tables.get(name.value()) else {
            if data.share {
                continue;
            }
            out.error(
                name.at(),
                format!(
                    "table {} is not in the data at {} (tables there: {})",
                    name.value(),
                    data.location,
                    data.tables.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            continue;
        };
        for (column, spec) in &table.value().columns {
            match data.column_type(name.value(), column.value()) {
                None => out.error(
                    column.at(),
                    format!(
                        "column {}.{} is not in the data (columns there: {})",
                        name.value(),
                        column.value(),
                        data_columns
                            .iter()
                            .map(|(c, _)| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Some(ty)
                    if *spec.value().class.value() == RawColumnClass::Sensitive
                        && !ty.is_numeric() =>
                {
                    out.error(
                        column.at(),
                        format!(
                            "sensitive column {}.{} must be numeric in the data, found {ty:?}",
                            name.value(),
                            column.value()
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        let listed: BTreeSet<&str> = table
            .value()
            .columns
            .keys()
            .map(|c| c.value().as_str())
            .collect();
        let hidden: Vec<&str> = data_columns
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| !listed.contains(c))
            .collect();
        if !hidden.is_empty() {
            out.warning(
                name.at(),
                format!(
                    "columns of {} in the data but not in the policy stay hidden from every role: {}",
                    name.value(),
                    hidden.join(", ")
                ),
            );
        }
    }
    let unlisted: Vec<&str> = data
        .tables
        .keys()
        .map(String::as_str)
        .filter(|t| !raw.tables.keys().any(|k| k.value() == t))
        .collect();
    if !unlisted.is_empty() {
        out.warning(
            raw.policy.at(),
            format!(
                "tables in the data but not in the policy are not served: {}",
                unlisted.join(", ")
            ),
        );
    }
}
