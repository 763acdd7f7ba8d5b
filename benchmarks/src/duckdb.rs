//! The DuckDB side: the same SQL over the same Parquet files, timed by
//! DuckDB through its Python package.
//!
//! `benchmarks/python/duckdb_side.py` does the timing (one warm-up, then the
//! best of the runs, each result read to the end as an Arrow table); this
//! module installs it on first use into the benchmark's own virtual
//! environment, `benchmarks/.venv` (`python3 -m venv`, then `pip install -r
//! benchmarks/python/requirements.txt`, pinned versions), and talks to it in
//! JSON over standard input and output. The interpreter that creates the
//! environment is `$PYTHON`, or `python3`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The benchmark crate's folder, where the script and the environment live.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The folder of the Python side.
fn python_dir() -> PathBuf {
    crate_dir().join("python")
}

/// The virtual environment holding DuckDB.
pub fn venv_dir() -> PathBuf {
    crate_dir().join(".venv")
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// What a failed process said, on one line: its `ERROR` lines when it has
/// some (pip's), else its last lines.
fn stderr_tail(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("ERROR") || l.contains("Error:"))
        .collect();
    let shown = if errors.is_empty() {
        &lines[lines.len().saturating_sub(3)..]
    } else {
        &errors[errors.len().saturating_sub(3)..]
    };
    shown.join(" / ")
}

/// Creates the virtual environment and installs the pinned requirements,
/// unless an environment with these very requirements is there already (the
/// requirements installed are kept in the environment and compared).
fn ensure_venv() -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let python = venv_python(&venv);
    let requirements = python_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = venv.join("seuil-bench-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(python);
    }
    if !python.exists() {
        let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        eprintln!("creating {} with {interpreter} -m venv", venv.display());
        let output = Command::new(&interpreter)
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .output()
            .with_context(|| format!("running {interpreter} -m venv"))?;
        if !output.status.success() {
            bail!(
                "{interpreter} -m venv {} failed: {}",
                venv.display(),
                stderr_tail(&output)
            );
        }
    }
    eprintln!(
        "installing {} into {}",
        requirements.display(),
        venv.display()
    );
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "20",
            "-r",
        ])
        .arg(&requirements)
        .output()
        .with_context(|| format!("running {} -m pip", python.display()))?;
    if !output.status.success() {
        bail!(
            "pip install -r {} failed: {}",
            requirements.display(),
            stderr_tail(&output)
        );
    }
    std::fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

#[derive(Serialize)]
struct Request<'a> {
    data: &'a Path,
    runs: usize,
    queries: Vec<NamedSql<'a>>,
}

#[derive(Serialize)]
struct NamedSql<'a> {
    name: &'a str,
    sql: &'a str,
}

#[derive(Deserialize)]
struct Response {
    duckdb: String,
    threads: u64,
    results: Vec<QueryResult>,
}

#[derive(Deserialize)]
struct QueryResult {
    name: String,
    #[serde(default)]
    ms: Option<f64>,
    #[serde(default)]
    rows: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

/// One query's DuckDB time, or why it has none.
#[derive(Debug, Clone)]
pub enum Timing {
    /// Best time in milliseconds and the rows of the result.
    Timed {
        /// Milliseconds from the call to the last row (best of the runs).
        ms: f64,
        /// Rows of the result.
        rows: u64,
    },
    /// DuckDB's error.
    Failed(String),
}

/// A batch of queries timed by DuckDB.
#[derive(Debug, Clone)]
pub struct Run {
    /// DuckDB's version.
    pub version: String,
    /// The threads DuckDB ran with (its default: the cores).
    pub threads: u64,
    timings: HashMap<String, Timing>,
}

impl Run {
    /// The best time and rows of the query sent under `name`, when it ran.
    pub fn ms(&self, name: &str) -> Option<(f64, u64)> {
        match self.timings.get(name) {
            Some(Timing::Timed { ms, rows }) => Some((*ms, *rows)),
            _ => None,
        }
    }

    /// The queries DuckDB failed, with its errors.
    pub fn failures(&self) -> Vec<(&str, &str)> {
        let mut failed: Vec<(&str, &str)> = self
            .timings
            .iter()
            .filter_map(|(name, t)| match t {
                Timing::Failed(error) => Some((name.as_str(), error.as_str())),
                Timing::Timed { .. } => None,
            })
            .collect();
        failed.sort_unstable();
        failed
    }

    /// A line for a report's setup.
    pub fn describe(&self) -> String {
        format!(
            "DuckDB {} (Python package, {} threads, {})",
            self.version,
            self.threads,
            venv_dir().display()
        )
    }
}

/// Times each `(name, sql)` in DuckDB over the Parquet files of `data`, with
/// one warm-up and the best of `runs`; sets the environment up first if
/// needed. Names must be distinct.
pub fn time_queries(data: &Path, runs: usize, queries: &[(&str, &str)]) -> anyhow::Result<Run> {
    let python = ensure_venv().context("setting up the DuckDB environment")?;
    let script = python_dir().join("duckdb_side.py");
    let data = std::fs::canonicalize(data)
        .with_context(|| format!("finding the data folder {}", data.display()))?;
    let request = serde_json::to_vec(&Request {
        data: &data,
        runs,
        queries: queries
            .iter()
            .map(|(name, sql)| NamedSql { name, sql })
            .collect(),
    })?;
    eprintln!("timing {} queries in DuckDB", queries.len());
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
    // The script reads all of its input before it writes: write, then close.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&request)
            .context("writing the queries to the DuckDB side")?;
    }
    let output = child
        .wait_with_output()
        .context("waiting for the DuckDB side")?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            stderr_tail(&output)
        );
    }
    let response: Response = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the output of {}", script.display()))?;
    let timings = response
        .results
        .into_iter()
        .map(|r| {
            let timing = match (r.ms, r.rows, r.error) {
                (Some(ms), Some(rows), None) => Timing::Timed { ms, rows },
                (_, _, Some(error)) => Timing::Failed(error),
                _ => Timing::Failed("no time in the DuckDB side's answer".into()),
            };
            (r.name, timing)
        })
        .collect();
    Ok(Run {
        version: response.duckdb,
        threads: response.threads,
        timings,
    })
}
