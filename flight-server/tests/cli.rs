//! The `seuil` command line, run as a user runs it: `gen`, `query`,
//! `policy check`, `policy explain`, `policy schema`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;
use std::process::{Command, Output};

fn seuil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seuil"))
        .args(args)
        .output()
        .expect("running seuil")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn generate(dir: &Path) {
    let out = seuil(&[
        "gen",
        "--persons",
        "3000",
        "--seed",
        "11",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn query_releases_large_cells_and_says_what_it_withholds() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path());
    let out = seuil(&[
        "query",
        "--user",
        "alice",
        "--data",
        data.path().to_str().unwrap(),
        "SELECT ben_res_com, count(*) FROM ir_ben_r GROUP BY 1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stderr);
    assert!(report.contains("cells released"), "{report}");
    // What is withheld, never how much: a count of suppressed cells would
    // tell a cell of 0 persons from one of a few.
    assert!(
        report.contains("cells of fewer than 11 persons") && !report.contains("suppressed"),
        "{report}"
    );
    let table = text(&out.stdout);
    assert!(table.contains("ben_res_com"), "{table}");
    // Every released count is at least the threshold (one row per person in ir_ben_r
    // except for persons with two source ids, so a count of 11 or more rows).
    for line in table
        .lines()
        .filter(|l| l.starts_with("| 0") || l.starts_with("| 1"))
    {
        let count: u64 = line.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(count >= 11, "{line}");
    }
}

#[test]
fn query_refuses_rows_and_says_what_to_write_instead() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path());
    let out = seuil(&[
        "query",
        "--user",
        "alice",
        "--data",
        data.path().to_str().unwrap(),
        "SELECT * FROM er_prs_f",
    ]);
    assert!(!out.status.success());
    let message = text(&out.stderr);
    assert!(
        message.contains("refused by rule 1 (aggregates only)"),
        "{message}"
    );
    assert!(
        message.contains("Hint: aggregate with GROUP BY"),
        "{message}"
    );
}

#[test]
fn query_formats_csv_and_json() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path());
    let sql = "SELECT ben_sex_cod, count(*) AS n FROM ir_ben_r GROUP BY 1 ORDER BY 1";
    let dir = data.path().to_str().unwrap();
    let csv = seuil(&[
        "query", "--user", "alice", "--data", dir, "--format", "csv", sql,
    ]);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    assert!(
        text(&csv.stdout).starts_with("ben_sex_cod,n\n1,"),
        "{}",
        text(&csv.stdout)
    );
    let json = seuil(&[
        "query", "--user", "alice", "--data", dir, "--format", "json", sql,
    ]);
    assert!(json.status.success());
    let rows: serde_json::Value = serde_json::from_str(&text(&json.stdout)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
}

#[test]
fn explain_shows_the_rewritten_query_and_the_rules() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path());
    let out = seuil(&[
        "policy",
        "explain",
        "--user",
        "alice",
        "--data",
        data.path().to_str().unwrap(),
        "SELECT prs_nat_ref, count(*) FROM er_prs_f GROUP BY 1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let explanation = text(&out.stdout);
    assert!(
        explanation.contains("WITH __seuil_cells_0 AS"),
        "{explanation}"
    );
    assert!(
        explanation.contains("seuil_persons_up_to("),
        "{explanation}"
    );
    assert!(
        explanation.contains("er_prs_f reaches the person through ir_ben_r"),
        "{explanation}"
    );
    assert!(explanation.contains(">= 11"), "{explanation}");
}

#[test]
fn policy_check_reports_located_errors_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        seuil_policies::SNDS_POLICY.replace("min_persons = 11", "min_persons = 2"),
    )
    .unwrap();
    let out = seuil(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let message = text(&out.stderr);
    let line = message.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!("{}:", bad.display())),
        "{message}"
    );
    assert!(
        line.contains(": error: role regional sets min_persons = 2")
            || line.contains(": error: role researcher sets min_persons = 2"),
        "{message}"
    );

    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, seuil_policies::SNDS_POLICY).unwrap();
    let out = seuil(&["policy", "check", ok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn policy_check_against_data_and_missing_folders() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path());
    let policy = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../policies/snds.toml");
    let out = seuil(&[
        "policy",
        "check",
        policy.to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("matches the data"));

    let out = seuil(&[
        "policy",
        "check",
        policy.to_str().unwrap(),
        "--data",
        "/no/such/folder",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/no/such/folder: error: no such data folder"));

    let out = seuil(&["policy", "check", "/no/such/policy.toml"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read the policy /no/such/policy.toml"));
}

#[test]
fn policy_schema_is_the_checked_in_one() {
    let out = seuil(&["policy", "schema"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(
                    || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
                    std::path::PathBuf::from,
                )
                .join("../policies/schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, checked_in);
}

#[test]
fn gen_is_reproducible() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [a.path(), b.path()] {
        let out = seuil(&[
            "gen",
            "--persons",
            "500",
            "--seed",
            "3",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(out.status.success());
    }
    for table in seuil_synth::TABLES {
        let file = format!("{table}.parquet");
        assert_eq!(
            std::fs::read(a.path().join(&file)).unwrap(),
            std::fs::read(b.path().join(&file)).unwrap(),
            "{table} differs between two runs with the same seed"
        );
    }
}
