//! The rule-file format as written: what serde reads from TOML, with the
//! source span of every value that a later check may need to point at.
//!
//! These types are also the source of the JSON Schema (`seuil policy schema`),
//! so their doc comments are what an editor shows when completing a key.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_spanned::Spanned;

/// A value and where it was written in the policy file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Located<T>(pub Spanned<T>);

impl<T> Located<T> {
    /// The value.
    pub fn value(&self) -> &T {
        self.0.get_ref()
    }

    /// Byte range of the value in the file.
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }

    /// The byte range, as diagnostics take it.
    pub fn at(&self) -> Option<Range<usize>> {
        Some(self.0.span())
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// A seuil policy: who the protected person is, how every private table
/// reaches that person, what each column may be used for, and how each role's
/// results are released.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Name and version of the policy, reported with every result.
    pub policy: Located<RawHeader>,
    /// The privacy unit: the column whose distinct values are counted as persons.
    pub person: Located<RawPerson>,
    /// Every table that may be queried, by name. Tables of the data that are not
    /// listed here do not exist for any role.
    #[serde(default)]
    pub tables: BTreeMap<Located<String>, Located<RawTable>>,
    /// The roles that users are given, by name.
    #[serde(default)]
    pub roles: BTreeMap<Located<String>, Located<RawRole>>,
}

/// Name and version of a policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    /// Policy name, such as `snds`.
    pub name: Located<String>,
    /// Version, reported in every result's metadata so that a released table
    /// can be traced to the rules it was released under.
    pub version: Located<String>,
    /// The smallest `min_persons` any role may set. Defaults to 5.
    #[serde(default)]
    pub min_persons_floor: Option<Located<u32>>,
}

/// The privacy unit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPerson {
    /// The table holding one row per source identifier of a person.
    pub table: Located<String>,
    /// The column whose distinct values are the persons (several source ids may
    /// share one person).
    pub column: Located<String>,
}

/// Whether a table's rows belong to persons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawTableKind {
    /// Each row belongs to a person, through a column of its own (the person
    /// table) or through `person_via`.
    Private,
    /// A code list or other table with no person in it; it flows freely.
    Public,
}

/// One table of the data.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    /// `private` or `public`.
    pub kind: Located<RawTableKind>,
    /// For a private table other than the person table: the foreign key that
    /// leads one step towards the person table. Following these steps from any
    /// private table must reach the person table.
    #[serde(default)]
    pub person_via: Option<Located<RawLink>>,
    /// Every column that may be used, with its class. Columns of the data that
    /// are not listed do not exist for any role.
    pub columns: BTreeMap<Located<String>, Located<RawColumn>>,
}

/// A foreign key from one table to another.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// The table referenced.
    pub table: Located<String>,
    /// Columns of this table, in order.
    pub columns: Located<Vec<Located<String>>>,
    /// Columns of the referenced table, matched in order with `columns`. They
    /// must form a key of that table (one row per value).
    pub references: Located<Vec<Located<String>>>,
}

/// What a column may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawColumnClass {
    /// Identifies a person or an event of a person. May be used to join, in
    /// `COUNT(DISTINCT ...)` and to group per person in a subquery; never
    /// released, grouped on in a result, or compared with a literal.
    Identifier,
    /// Describes a person (age, sex, place) or an event (date, code): may be
    /// grouped on and filtered on; released only in cells of enough persons.
    QuasiIdentifier,
    /// A magnitude (amount, quantity): summed with each person's contribution
    /// clamped to `bounds`, and protected by the dominance rules.
    Sensitive,
    /// Carries nothing about a person (labels of a code list).
    Public,
}

/// A column's class and, for sensitive columns, its bounds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawColumn {
    /// `identifier`, `quasi_identifier`, `sensitive` or `public`.
    pub class: Located<RawColumnClass>,
    /// For `sensitive` columns: `[lower, upper]`, the range each person's
    /// contribution to a sum is clamped to.
    #[serde(default)]
    pub bounds: Option<Located<[f64; 2]>>,
}

/// How a role's results are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawMode {
    /// Exact values in cells of at least `min_persons` persons, with dominance,
    /// secondary suppression and optional rounding (accredited researchers).
    Threshold,
    /// Differential privacy with a budget (wider audiences): each person's
    /// contribution bounded, every number noisy, cells chosen by private
    /// partition selection.
    Dp,
}

/// A role: a project's approved scope and release rules.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    /// `threshold` (default) or `dp`.
    #[serde(default)]
    pub mode: Option<Located<RawMode>>,
    /// Every released cell covers at least this many distinct persons. Default 11.
    #[serde(default)]
    pub min_persons: Option<Located<u32>>,
    /// The (n, k) dominance rule: suppress a cell when its `n` largest persons
    /// hold more than `k` percent of a sensitive total.
    #[serde(default)]
    pub dominance: Option<Located<RawDominance>>,
    /// The p% rule: suppress a cell when the second largest person could
    /// estimate the largest one's contribution to within `p` percent.
    #[serde(default)]
    pub p_percent: Option<Located<f64>>,
    /// Round every released value (counts, sums, averages, person counts,
    /// order statistics) to the nearest multiple of this base, after
    /// suppression and never before. A value that is not a number (the
    /// `MIN` of a date or a text) cannot be rounded, so it is refused to
    /// such a role.
    #[serde(default)]
    pub rounding: Option<Located<u32>>,
    /// Whether `MIN`, `MAX`, `MEDIAN` (and `BOOL_AND`, `BOOL_OR`) of private
    /// columns are allowed, sensitive or not, and how many extreme persons
    /// are left out.
    #[serde(default)]
    pub order_statistics: Option<Located<RawOrderStatistics>>,
    /// Protection interval for secondary suppression, in percent of a
    /// suppressed cell's value. Default 10.
    #[serde(default)]
    pub protection_percent: Option<Located<f64>>,
    /// Differential privacy settings, required in `dp` mode.
    #[serde(default)]
    pub dp: Option<Located<RawDp>>,
    /// The tables this role may query, with optional column lists and row
    /// filters. Tables not listed do not exist for the role.
    #[serde(default)]
    pub tables: BTreeMap<Located<String>, Located<RawScope>>,
}

/// The (n, k) dominance rule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDominance {
    /// Number of largest contributors considered.
    pub n: Located<u32>,
    /// Largest share, in percent, those contributors may hold.
    pub k: Located<f64>,
}

/// Order statistics of sensitive columns.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOrderStatistics {
    /// Whether the role may use them at all.
    pub allowed: Located<bool>,
    /// How many persons are left out at each end before the statistic is taken.
    #[serde(default)]
    pub exclude: Option<Located<u32>>,
}

/// Differential privacy settings of a role.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDp {
    /// Total epsilon each user of the role may spend.
    pub epsilon_budget: Located<f64>,
    /// Epsilon each query spends, split evenly over its noisy numbers.
    pub epsilon_per_query: Located<f64>,
    /// Delta of each query, all of it for the choice of released cells
    /// (partition selection). Default 1e-7.
    #[serde(default)]
    pub delta: Option<Located<f64>>,
    /// Most cells of one released aggregate a person counts in; beyond, the
    /// cells are chosen by a keyed hash the querier cannot steer. Default 1.
    #[serde(default)]
    pub max_groups_per_person: Option<Located<u32>>,
    /// Most rows of one person counted in one cell. Defaults to 1.
    #[serde(default)]
    pub max_rows_per_cell: Option<Located<u32>>,
    /// Total epsilon all users of the role (its project) may spend together;
    /// no project-wide limit when omitted.
    #[serde(default)]
    pub project_epsilon_budget: Option<Located<f64>>,
    /// Total delta each user of the role may spend; no limit on delta apart
    /// from epsilon's when omitted.
    #[serde(default)]
    pub delta_budget: Option<Located<f64>>,
}

/// A role's access to one table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    /// The columns the role may use; all the policy's columns when omitted.
    #[serde(default)]
    pub columns: Option<Located<Vec<Located<String>>>>,
    /// A SQL condition on this table's columns applied under every query of the
    /// role, such as `exe_soi_dtd >= DATE '2020-01-01'`.
    #[serde(default)]
    pub row_filter: Option<Located<String>>,
}
