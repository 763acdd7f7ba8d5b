//! The federated layout (DESIGN.md §3): the SNDS as its data sites hold it,
//! one folder per data node. The health insurance's node holds the
//! beneficiaries, claims, dispensations and long-term illnesses; the
//! hospital agency's node holds the stays; the public code lists are on
//! both, so that either can join them.

use std::path::{Path, PathBuf};

use crate::error::SynthError;
use crate::{GenConfig, GenSummary, TABLES, TableSummary};

/// Each node's folder name and its private tables.
pub const FEDERATED_NODES: [(&str, &[&str]); 2] = [
    ("cnam", &["ir_ben_r", "er_prs_f", "er_pha_f", "ir_imb_r"]),
    ("hospitals", &["t_mco_b", "t_mco_c"]),
];

/// The public code lists, written into every node's folder.
pub const PUBLIC_TABLES: [&str; 3] = ["ref_cim10", "ref_atc", "ref_dpt"];

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generates the synthetic SNDS of `config` into one folder per node of
/// [`FEDERATED_NODES`] under `config.out_dir`: the same rows as
/// [`crate::generate`] writes into one folder, split by table. The summary
/// lists each table once, at its node's path.
pub fn generate_federated(
    config: &GenConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenSummary, SynthError> {
    let whole_dir = config.out_dir.join(".whole");
    let whole = crate::generate(
        &GenConfig {
            out_dir: whole_dir.clone(),
            ..config.clone()
        },
        progress,
    )?;
    let mut tables = Vec::new();
    for (node, private) in FEDERATED_NODES {
        let dir = config.out_dir.join(node);
        std::fs::create_dir_all(&dir).map_err(|source| SynthError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        for table in private.iter().chain(PUBLIC_TABLES.iter()) {
            let written = whole
                .tables
                .iter()
                .find(|t| t.name == *table)
                .ok_or_else(|| SynthError::Io {
                    path: whole_dir.join(table),
                    source: std::io::Error::other("a table was not generated"),
                })?;
            let target: PathBuf = dir.join(format!("{table}.parquet"));
            std::fs::copy(&written.path, &target).map_err(io(&target))?;
            if private.contains(table) || node == FEDERATED_NODES[0].0 {
                tables.push(TableSummary {
                    name: written.name,
                    rows: written.rows,
                    path: target,
                });
            }
        }
    }
    std::fs::remove_dir_all(&whole_dir).map_err(io(&whole_dir))?;
    tables.sort_by_key(|t| TABLES.iter().position(|name| *name == t.name));
    Ok(GenSummary { tables })
}
