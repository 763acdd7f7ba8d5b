//! `seuil-bench compare A.json B.json`: two recorded runs side by side.
//!
//! For each measurement present in both runs (by name), each value and
//! ratio found in both, in A and in B, and B / A; then the summary lines of
//! both. Measurements, values and setup lines found in one run only are
//! listed as such.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::report::{Measurement, Report};

/// Arguments of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The first run (a file written by `--json`).
    pub a: PathBuf,
    /// The second run, compared with the first.
    pub b: PathBuf,
}

fn read(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading the report in {}", path.display()))
}

/// Labelled numbers of one measurement: its values, then its ratios.
fn numbers(m: &Measurement) -> Vec<(String, f64)> {
    let mut out = m.values.clone();
    if let Some(ratio) = m.ratio {
        out.push(("ratio".into(), ratio));
    }
    out.extend(
        m.ratios
            .iter()
            .map(|(label, r)| (format!("ratio {label}"), *r)),
    );
    out
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn lookup<'a, T>(pairs: &'a [(String, T)], key: &str) -> Option<&'a T> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The comparison of two reports as text.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = String::new();
    if a.suite == b.suite {
        out.push_str(&format!("suite {}\n", a.suite));
    } else {
        out.push_str(&format!("suites differ: A {}, B {}\n", a.suite, b.suite));
    }
    for (key, value_a) in &a.setup {
        match lookup(&b.setup, key) {
            Some(value_b) if value_b == value_a => {
                out.push_str(&format!("  {key}: {value_a}\n"));
            }
            Some(value_b) => {
                out.push_str(&format!("  {key}:\n    A {value_a}\n    B {value_b}\n"));
            }
            None => out.push_str(&format!("  {key}: A {value_a}; not in B\n")),
        }
    }
    for (key, value_b) in &b.setup {
        if lookup(&a.setup, key).is_none() {
            out.push_str(&format!("  {key}: B {value_b}; not in A\n"));
        }
    }
    out.push_str(&format!(
        "  {:<28} {:>12} {:>12} {:>8}\n",
        "", "A", "B", "B/A"
    ));
    let mut only_a = Vec::new();
    for m_a in &a.measurements {
        let Some(m_b) = b.measurements.iter().find(|m| m.name == m_a.name) else {
            only_a.push(m_a.name.as_str());
            continue;
        };
        out.push_str(&format!("  {}\n", m_a.name));
        let (numbers_a, numbers_b) = (numbers(m_a), numbers(m_b));
        for (label, value_a) in &numbers_a {
            let Some(value_b) = lookup(&numbers_b, label) else {
                out.push_str(&format!(
                    "    {label:<26} {:>12} {:>12}\n",
                    format_number(*value_a),
                    "-"
                ));
                continue;
            };
            let quotient = if *value_a == 0.0 {
                "-".to_string()
            } else {
                format!("{:.2}", value_b / value_a)
            };
            out.push_str(&format!(
                "    {label:<26} {:>12} {:>12} {quotient:>8}\n",
                format_number(*value_a),
                format_number(*value_b)
            ));
        }
        for (label, value_b) in &numbers_b {
            if lookup(&numbers_a, label).is_none() {
                out.push_str(&format!(
                    "    {label:<26} {:>12} {:>12}\n",
                    "-",
                    format_number(*value_b)
                ));
            }
        }
    }
    let only_b: Vec<&str> = b
        .measurements
        .iter()
        .filter(|m| !a.measurements.iter().any(|m_a| m_a.name == m.name))
        .map(|m| m.name.as_str())
        .collect();
    if !only_a.is_empty() {
        out.push_str(&format!("  only in A: {}\n", only_a.join(", ")));
    }
    if !only_b.is_empty() {
        out.push_str(&format!("  only in B: {}\n", only_b.join(", ")));
    }
    for (key, value_a) in &a.summary {
        let value_b = lookup(&b.summary, key).map_or("-", String::as_str);
        out.push_str(&format!("  {key}: A {value_a} | B {value_b}\n"));
    }
    for (key, value_b) in &b.summary {
        if lookup(&a.summary, key).is_none() {
            out.push_str(&format!("  {key}: A - | B {value_b}\n"));
        }
    }
    out
}

/// Reads both runs and compares them.
pub fn run(args: &Args) -> anyhow::Result<String> {
    Ok(compare(&read(&args.a)?, &read(&args.b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seuil_ms: f64, extra: Option<(&str, f64)>) -> Report {
        Report {
            suite: "queries".into(),
            setup: vec![("data".into(), "/tmp/x".into())],
            measurements: vec![Measurement {
                name: "q".into(),
                values: vec![("seuil_ms".into(), seuil_ms)],
                ratio: Some(1.5),
                ratios: extra.map(|(l, r)| vec![(l.into(), r)]).unwrap_or_default(),
            }],
            summary: vec![("median".into(), "1.5".into())],
        }
    }

    #[test]
    fn reads_old_reports_and_divides_b_by_a() -> anyhow::Result<()> {
        // A report recorded before `ratios` existed still reads.
        let old: Report = serde_json::from_str(
            r#"{"suite":"queries","setup":[["data","/tmp/x"]],
                "measurements":[{"name":"q","values":[["seuil_ms",10.0]],"ratio":1.5}],
                "summary":[["median","1.5"]]}"#,
        )?;
        let text = compare(&old, &report(20.0, Some(("seuil/duckdb", 3.0))));
        assert!(text.contains("seuil_ms"), "{text}");
        assert!(text.contains("2.00"), "{text}");
        assert!(text.contains("ratio seuil/duckdb"), "{text}");
        assert!(text.contains("median: A 1.5 | B 1.5"), "{text}");
        Ok(())
    }
}
