//! The validated policy: what the engine enforces.
//!
//! A [`Policy`] only exists once its rule file has passed every check in
//! [`crate::validate`], so the engine can rely on its invariants: every private
//! table reaches the person table, every role's scope names existing tables
//! and columns, and no role's threshold is below the policy's floor.

use std::collections::{BTreeMap, BTreeSet};

/// Default `min_persons`: the CASD rule, no cell under 11 patients.
pub const DEFAULT_MIN_PERSONS: u32 = 11;
/// Default floor under which no role may set `min_persons`.
pub const DEFAULT_MIN_PERSONS_FLOOR: u32 = 5;
/// Default protection interval of secondary suppression, in percent.
pub const DEFAULT_PROTECTION_PERCENT: f64 = 10.0;

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Policy name, such as `snds`.
    pub name: String,
    /// Policy version, reported with every result.
    pub version: String,
    /// No role's `min_persons` is below this.
    pub min_persons_floor: u32,
    /// The privacy unit.
    pub person: PersonColumn,
    /// Every queryable table, by name.
    pub tables: BTreeMap<String, TablePolicy>,
    /// Every role, by name.
    pub roles: BTreeMap<String, Role>,
}

/// The column whose distinct values are the persons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonColumn {
    /// Table holding the person column.
    pub table: String,
    /// The person column.
    pub column: String,
}

/// Whether a table's rows belong to persons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Rows belong to persons.
    Private,
    /// No person in it.
    Public,
}

/// One table of the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct TablePolicy {
    /// Table name.
    pub name: String,
    /// Private or public.
    pub kind: TableKind,
    /// For private tables other than the person table: one step towards it.
    pub person_via: Option<Link>,
    /// The usable columns and their classes.
    pub columns: BTreeMap<String, ColumnPolicy>,
}

/// A foreign key from one table to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The referenced table.
    pub table: String,
    /// Columns of the referencing table.
    pub columns: Vec<String>,
    /// Matching key columns of the referenced table.
    pub references: Vec<String>,
}

/// What a column may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnClass {
    /// Joins, `COUNT(DISTINCT ...)` and per-person subqueries only.
    Identifier,
    /// Groupable and filterable; released in cells of enough persons.
    QuasiIdentifier,
    /// A magnitude: clamped sums, dominance rules.
    Sensitive,
    /// Nothing about a person.
    Public,
}

impl ColumnClass {
    /// The name used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnClass::Identifier => "identifier",
            ColumnClass::QuasiIdentifier => "quasi_identifier",
            ColumnClass::Sensitive => "sensitive",
            ColumnClass::Public => "public",
        }
    }
}

/// A column's class and, for sensitive columns, its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnPolicy {
    /// The class.
    pub class: ColumnClass,
    /// `(lower, upper)` clamp of each person's contribution, for sensitive columns.
    pub bounds: Option<(f64, f64)>,
}

/// How a role's results are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exact values above thresholds.
    Threshold,
    /// Differential privacy with a budget.
    Dp,
}

impl Mode {
    /// The name used in rule files and result metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Threshold => "threshold",
            Mode::Dp => "dp",
        }
    }
}

/// The (n, k) dominance rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dominance {
    /// Number of largest persons considered.
    pub n: u32,
    /// Largest share in percent they may hold.
    pub k: f64,
}

/// Whether order statistics of sensitive columns are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderStatistics {
    /// Allowed at all.
    pub allowed: bool,
    /// Persons left out at each end.
    pub exclude: u32,
}

/// Differential privacy settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSettings {
    /// Total epsilon per user.
    pub epsilon_budget: f64,
    /// Epsilon of one query, split over its noisy releases.
    pub epsilon_per_query: f64,
    /// Delta of one query, all of it for partition selection.
    pub delta: f64,
    /// Most groups (cells of one released aggregate) one person contributes
    /// to per query.
    pub max_groups_per_person: u32,
    /// Most rows of one person counted in one cell.
    pub max_rows_per_cell: u32,
    /// Total epsilon of all the role's users together, if limited.
    pub project_epsilon_budget: Option<f64>,
    /// Total delta per user, if limited.
    pub delta_budget: Option<f64>,
}

/// A role's view of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableScope {
    /// Visible columns (always a subset of the policy's columns for the table).
    pub columns: BTreeSet<String>,
    /// SQL condition applied under every scan of the table.
    pub row_filter: Option<String>,
}

/// A role.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// Role name.
    pub name: String,
    /// Release mode.
    pub mode: Mode,
    /// Smallest number of distinct persons in a released cell.
    pub min_persons: u32,
    /// The (n, k) dominance rule, if any.
    pub dominance: Option<Dominance>,
    /// The p% rule, if any.
    pub p_percent: Option<f64>,
    /// Rounding base of released values, if any.
    pub rounding: Option<u32>,
    /// Order statistics of private columns.
    pub order_statistics: OrderStatistics,
    /// Protection interval for secondary suppression, in percent.
    pub protection_percent: f64,
    /// Differential privacy settings, in `dp` mode.
    pub dp: Option<DpSettings>,
    /// Visible tables.
    pub tables: BTreeMap<String, TableScope>,
}

impl Policy {
    /// The table policy for `name`, if the policy lists it.
    pub fn table(&self, name: &str) -> Option<&TablePolicy> {
        self.tables.get(name)
    }

    /// The class of a column, if the policy lists it.
    pub fn column_class(&self, table: &str, column: &str) -> Option<ColumnClass> {
        self.tables.get(table)?.columns.get(column).map(|c| c.class)
    }

    /// The links from `table` to the person table, in order. Empty for the
    /// person table and for public tables. Validation guarantees the chain ends
    /// at the person table without cycles.
    pub fn path_to_person(&self, table: &str) -> Vec<&Link> {
        let mut path = Vec::new();
        let mut current = table;
        while let Some(link) = self.tables.get(current).and_then(|t| t.person_via.as_ref()) {
            path.push(link);
            current = &link.table;
            if path.len() > self.tables.len() {
                break; // unreachable for a validated policy; never loop forever
            }
        }
        path
    }

    /// Sets of columns of `table` that determine the person of a row: the
    /// person column, the table's own link columns, and every key that another
    /// table's link references in it (a referenced key names one row, hence one
    /// person). Grouping by any such set is grouping per person.
    pub fn person_keys(&self, table: &str) -> Vec<Vec<String>> {
        let mut keys: Vec<Vec<String>> = Vec::new();
        let Some(policy) = self.tables.get(table) else {
            return keys;
        };
        if policy.kind == TableKind::Public {
            return keys;
        }
        if self.person.table == table {
            keys.push(vec![self.person.column.clone()]);
        }
        if let Some(link) = &policy.person_via {
            keys.push(link.columns.clone());
        }
        for other in self.tables.values() {
            if let Some(link) = &other.person_via
                && link.table == table
                && !keys.contains(&link.references)
            {
                keys.push(link.references.clone());
            }
        }
        keys
    }
}
