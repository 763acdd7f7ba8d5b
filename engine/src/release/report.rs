//! What one query released and withheld: the full detail for the audit
//! log, and the part a client may see.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use seuil_policies::{Policy, Role};

/// Why a cell or a value was not released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// Fewer than `min_persons` distinct persons (rule 2).
    Persons,
    /// A sensitive sum dominated by its largest persons (rule 6).
    Dominance,
    /// Hidden so that margins cannot give a suppressed cell back (rule 7).
    Secondary,
}

impl SuppressionReason {
    /// The reason's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Persons => "persons",
            SuppressionReason::Dominance => "dominance",
            SuppressionReason::Secondary => "secondary",
        }
    }
}

/// One suppressed cell: which aggregate, which margin, and why. The cell's
/// coordinates are not given: that a small cell exists is itself something
/// about persons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuppressedCell {
    /// Which released aggregate of the query (from 0).
    pub aggregate: usize,
    /// For tables with margins, the group columns the cell is broken down by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Vec<String>>,
    /// Why.
    pub reason: SuppressionReason,
}

/// What crossed between the coordinator and one data node for a query
/// (DESIGN.md §3): the cells plans sent, the rows and bytes of cells that
/// came back, and the bytes the node's scans read. The audit line holds it
/// all; a client sees only which nodes served ([`ReleaseReport::metadata`]),
/// since the cells a node sent count the suppressed ones too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTraffic {
    /// The node's name.
    pub node: String,
    /// Cells plans it ran.
    pub plans: u64,
    /// Rows of cells it sent back (released and suppressed alike).
    pub rows: u64,
    /// Bytes of Arrow data it sent back.
    pub bytes: u64,
    /// Bytes its Parquet scans read.
    pub bytes_scanned: u64,
}

impl NodeTraffic {
    /// Adds what one more plan moved.
    pub fn add(&mut self, other: &NodeTraffic) {
        self.plans += other.plans;
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.bytes_scanned += other.bytes_scanned;
    }
}

/// What one query released. The fields are the full detail, for the audit
/// log; [`ReleaseReport::metadata`] is what the client may see.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseReport {
    /// Policy name.
    pub policy: String,
    /// Policy version.
    pub policy_version: String,
    /// The role the query ran under.
    pub role: String,
    /// Release mode.
    pub mode: String,
    /// Smallest number of distinct persons per released cell and value.
    pub min_persons: u32,
    /// Rounding base of released values, if any.
    pub rounding: Option<u32>,
    /// Number of released aggregates in the query.
    pub released_aggregates: usize,
    /// Cells released, over all released aggregates.
    pub cells_released: u64,
    /// Cells suppressed, over all released aggregates (audit only).
    pub cells_suppressed: u64,
    /// Suppressed cells by reason (audit only).
    pub suppressed_by_reason: BTreeMap<SuppressionReason, u64>,
    /// Each suppressed cell's reason (audit only).
    pub suppressed_cells: Vec<SuppressedCell>,
    /// Values of released cells set to NULL for having too few
    /// contributing persons.
    pub values_suppressed: u64,
    /// What each data node ran and sent for the query (audit only, but for
    /// the nodes' names).
    pub nodes: Vec<NodeTraffic>,
    /// In dp mode: the query's cost, its charge, and every mechanism's
    /// parameters, all fixed before any data was read.
    pub dp: Option<DpRelease>,
}

/// What a dp query spent and how its noise was calibrated: all of it known
/// from the policy and the query's shape, before execution, and none of it
/// computed from data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DpRelease {
    /// The query's ε (what is charged).
    pub epsilon: f64,
    /// The query's δ, all of it for partition selection.
    pub delta: f64,
    /// The noisy releases ε is split evenly over (selections included).
    pub releases: usize,
    /// ε of each release.
    pub epsilon_per_release: f64,
    /// Most cells of one aggregate a person counts in.
    pub max_groups_per_person: u32,
    /// Most rows of one person counted in one cell.
    pub max_rows_per_cell: u32,
    /// The partition selection of each released aggregate, by its id.
    pub selections: Vec<Selection>,
    /// Each noisy value of each released aggregate.
    pub values: Vec<NoisyField>,
    /// The ledger's charge, once made.
    pub charge: Option<crate::budget::Charge>,
}

/// How one released aggregate's cells are selected: a cell is released
/// when its person count, less `pre_threshold`, plus discrete Laplace noise
/// of `scale`, reaches `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// Which released aggregate.
    pub aggregate: usize,
    /// `min_persons - 1`, taken from each cell's count first.
    pub pre_threshold: u32,
    /// The noise scale.
    pub scale: f64,
    /// The threshold, the smallest whose δ is within `delta`.
    pub threshold: i64,
    /// The δ of this selection's threshold, from the measurement's own map.
    pub delta: f64,
}

/// How one released value is made noisy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoisyField {
    /// Which released aggregate.
    pub aggregate: usize,
    /// The value's position among the aggregate's values.
    pub value: usize,
    /// Its name in the aggregate's output.
    pub name: String,
    /// `laplace_threshold` (the selection's count), `laplace`, or
    /// `laplace_ratio` for an average (a noisy sum over a noisy count).
    pub mechanism: String,
    /// The noise scale (of the sum, for an average).
    pub scale: f64,
    /// The count's noise scale, for an average.
    pub count_scale: Option<f64>,
    /// Rounding grid of float noise, if any.
    pub grid: Option<f64>,
    /// Half-width of the 95% interval of the noise, when it has one.
    pub ci95: Option<f64>,
}

impl DpRelease {
    /// The keys known before the query runs: the cost, the bounds, and each
    /// selection's and noisy value's parameters (as JSON, one entry per
    /// released aggregate or value).
    fn insert_static(&self, metadata: &mut HashMap<String, String>) {
        metadata.insert("seuil.dp.epsilon".into(), self.epsilon.to_string());
        metadata.insert("seuil.dp.delta".into(), self.delta.to_string());
        metadata.insert(
            "seuil.dp.epsilon_per_release".into(),
            self.epsilon_per_release.to_string(),
        );
        metadata.insert(
            "seuil.dp.max_groups_per_person".into(),
            self.max_groups_per_person.to_string(),
        );
        metadata.insert(
            "seuil.dp.max_rows_per_cell".into(),
            self.max_rows_per_cell.to_string(),
        );
        if let Ok(selections) = serde_json::to_string(&self.selections) {
            metadata.insert("seuil.dp.selection".into(), selections);
        }
        if let Ok(values) = serde_json::to_string(&self.values) {
            metadata.insert("seuil.dp.values".into(), values);
        }
    }

    /// The noisy value named `name` (in its aggregate's output), if one is.
    pub fn field(&self, name: &str) -> Option<&NoisyField> {
        self.values.iter().find(|v| v.name == name)
    }
}

impl NoisyField {
    /// The value's field metadata (`seuil.dp.mechanism`, `seuil.dp.scale`,
    /// `seuil.dp.ci95`, ...).
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        metadata.insert("seuil.dp.mechanism".into(), self.mechanism.clone());
        metadata.insert("seuil.dp.scale".into(), self.scale.to_string());
        if let Some(scale) = self.count_scale {
            metadata.insert("seuil.dp.count_scale".into(), scale.to_string());
        }
        if let Some(grid) = self.grid {
            metadata.insert("seuil.dp.grid".into(), grid.to_string());
        }
        if let Some(ci) = self.ci95 {
            metadata.insert("seuil.dp.ci95".into(), ci.to_string());
        }
        metadata
    }
}

impl ReleaseReport {
    /// An empty report for a query of `role`.
    pub fn new(policy: &Policy, role: &Role) -> Self {
        Self {
            policy: policy.name.clone(),
            policy_version: policy.version.clone(),
            role: role.name.clone(),
            mode: role.mode.as_str().to_string(),
            min_persons: role.min_persons,
            rounding: role.rounding,
            released_aggregates: 0,
            cells_released: 0,
            cells_suppressed: 0,
            suppressed_by_reason: BTreeMap::new(),
            suppressed_cells: Vec::new(),
            values_suppressed: 0,
            nodes: Vec::new(),
            dp: None,
        }
    }

    /// The keys known before the query runs: policy, role, mode, threshold,
    /// and what the rules withhold.
    pub fn static_metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        metadata.insert("seuil.policy".into(), self.policy.clone());
        metadata.insert("seuil.policy_version".into(), self.policy_version.clone());
        metadata.insert("seuil.role".into(), self.role.clone());
        metadata.insert("seuil.mode".into(), self.mode.clone());
        metadata.insert("seuil.min_persons".into(), self.min_persons.to_string());
        if let Some(base) = self.rounding {
            metadata.insert("seuil.rounding".into(), base.to_string());
        }
        metadata.insert("seuil.suppression".into(), self.withheld());
        if let Some(dp) = &self.dp {
            dp.insert_static(&mut metadata);
        }
        metadata
    }

    /// What the release rules withhold, in words: the same for every
    /// query of the role, whatever the data.
    pub fn withheld(&self) -> String {
        let k = self.min_persons;
        if self.mode == seuil_policies::Mode::Dp.as_str() {
            return format!(
                "every number is noisy; a cell is released when its noisy count of persons, less {}, passes a threshold set by delta, so cells of few persons are left out without saying how many",
                k.saturating_sub(1)
            );
        }
        format!(
            "cells of fewer than {k} persons, cells dominated by their largest persons, and cells that protect them in tables with margins are left out; values computed from fewer than {k} persons are NULL; how many were withheld is kept in the audit log only"
        )
    }

    /// The report as the client sees it, as Arrow schema metadata under
    /// `seuil.*` keys: the static keys, how many aggregates and cells were
    /// released. Nothing counts suppressed cells or values: those counts
    /// would tell a cell of 0 persons from one of a few.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = self.static_metadata();
        metadata.insert(
            "seuil.released_aggregates".into(),
            self.released_aggregates.to_string(),
        );
        metadata.insert(
            "seuil.cells_released".into(),
            self.cells_released.to_string(),
        );
        if !self.nodes.is_empty() {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.node.as_str()).collect();
            metadata.insert("seuil.nodes".into(), names.join(","));
        }
        if let Some(charge) = self.dp.as_ref().and_then(|dp| dp.charge.as_ref()) {
            metadata.insert("seuil.dp.epsilon_spent".into(), charge.epsilon.to_string());
            metadata.insert("seuil.dp.delta_spent".into(), charge.delta.to_string());
            metadata.insert(
                "seuil.dp.epsilon_left".into(),
                charge.user_epsilon_left.to_string(),
            );
            if let Some(left) = charge.project_epsilon_left {
                metadata.insert("seuil.dp.project_epsilon_left".into(), left.to_string());
            }
            if let Some(left) = charge.user_delta_left {
                metadata.insert("seuil.dp.delta_left".into(), left.to_string());
            }
            metadata.insert("seuil.dp.charge_id".into(), charge.charge_id.clone());
        }
        metadata
    }

    /// Counts what a data node moved for one cells plan.
    pub fn add_traffic(&mut self, traffic: &NodeTraffic) {
        match self.nodes.iter_mut().find(|n| n.node == traffic.node) {
            Some(known) => known.add(traffic),
            None => self.nodes.push(traffic.clone()),
        }
    }

    /// Counts a suppressed cell.
    pub(crate) fn suppress(&mut self, cell: SuppressedCell) {
        *self.suppressed_by_reason.entry(cell.reason).or_default() += 1;
        self.cells_suppressed += 1;
        self.suppressed_cells.push(cell);
    }
}
