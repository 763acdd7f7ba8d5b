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
        metadata
    }

    /// What the release rules withhold, in words: the same for every
    /// query of the role, whatever the data.
    pub fn withheld(&self) -> String {
        let k = self.min_persons;
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
