//! The engine's modules import one way: each module of `src/` may use only
//! the modules below it in [`LAYERS`], and no file imports one that imports
//! it back, directly or through others. A new module gets its place in the
//! list; a module that needs one above it is in the wrong place, or the
//! thing it needs is.
//!
//! Imports are read from the source text (`crate::...`, `super::...`, and a
//! folder's own child modules named from its `mod.rs`), with comments and
//! unit-test modules left out: documentation links are not imports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The engine's top-level modules, lowest first. `lib` (the front page and
/// the `Engine` itself) is the top.
const LAYERS: &[&str] = &[
    // What everything may use: errors and places, cancellation, lineage
    // types and reserved names, seuil's aggregate functions.
    "error",
    "cancellation",
    "lineage",
    "functions",
    "hints",
    // The streaming pass that bounds each person's contributions in dp
    // mode, and the planning that keeps its input in person order.
    "contributions",
    // Opening data: limits, options, sessions, the catalog of tables.
    "limits",
    "options",
    "grouping_set_properties",
    "session",
    "catalog",
    // The privacy budget ledger of dp mode.
    "budget",
    // The privacy rules: verdicts and expressions, one rule per module.
    "rules",
    // The cells plan of a released aggregate, then its release.
    "cells",
    "release",
    // The audit line of a query, from its release report.
    "audit",
    // The walker that applies the rules to a plan.
    "rewrite",
    // What runs queries and builds the person index.
    "query",
    "explain",
    "person_index",
    // Cells plans sent to data nodes, and what a node lets out.
    "federation",
    "lib",
];

/// A module path (`cells::per_person`) for each source file.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("the source folder is readable") {
            let path = entry.expect("a readable entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let name = if parts.is_empty() {
                "lib".to_string()
            } else {
                parts.join("::")
            };
            found.insert(
                name,
                fs::read_to_string(&path).expect("a readable source file"),
            );
        }
    }
    found
}

/// The source without comments and without its unit-test module.
fn code_of(source: &str) -> String {
    let source = source
        .find("#[cfg(test)]\nmod tests")
        .map_or(source, |at| &source[..at]);
    source
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths (`a::b::C`) that follow each occurrence of `prefix`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c};`: each member is a path.
            let end = group.find("};").unwrap_or(group.len());
            for member in group[..end].split(',') {
                paths.push(member.trim().trim_start_matches('{').to_string());
            }
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        paths.push(rest[..end].to_string());
    }
    paths
}

/// The modules a file uses.
fn imports(module: &str, source: &str, all: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code = code_of(source);
    let mut paths: Vec<String> = paths_after(&code, "crate::");
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    for path in paths_after(&code, "super::") {
        paths.push(if parent.is_empty() {
            path
        } else {
            format!("{parent}::{path}")
        });
    }
    // A folder's `mod.rs` names its children without `crate::`.
    for line in code.lines() {
        let line = line.trim();
        let declared = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix(';'));
        if let Some(child) = declared {
            let base = if module == "lib" {
                String::new()
            } else {
                format!("{module}::")
            };
            for path in paths_after(&code, &format!("{child}::")) {
                paths.push(format!("{base}{child}::{path}"));
            }
        }
    }
    let mut used = BTreeSet::new();
    for path in paths {
        let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        let target = (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|candidate| all.contains_key(candidate))
            .unwrap_or_else(|| "lib".to_string());
        if target != module {
            used.insert(target);
        }
    }
    used
}

fn top_level(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn engine_modules_import_one_way() {
    let src = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("src");
    let all = modules(&src);
    let graph: BTreeMap<&str, BTreeSet<String>> = all
        .iter()
        .map(|(module, source)| (module.as_str(), imports(module, source, &all)))
        .collect();
    let mut problems = Vec::new();
    for (module, used) in &graph {
        let Some(layer) = LAYERS.iter().position(|l| *l == top_level(module)) else {
            problems.push(format!("{module} has no place in LAYERS"));
            continue;
        };
        for target in used {
            let target_layer = LAYERS.iter().position(|l| *l == top_level(target));
            if top_level(target) != top_level(module) && target_layer.is_none_or(|t| t > layer) {
                problems.push(format!("{module} imports {target}, which is above it"));
            }
        }
    }
    // No circle between files, inside a folder as well as across.
    for (module, used) in &graph {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<&str> = used.iter().map(String::as_str).collect();
        while let Some(next) = pending.pop() {
            if next == *module {
                problems.push(format!("{module} imports a module that imports it back"));
                break;
            }
            if seen.insert(next) {
                pending.extend(graph.get(next).into_iter().flatten().map(String::as_str));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
