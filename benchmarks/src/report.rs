//! A suite's results: named measurements with their ratios.

use serde::{Deserialize, Serialize};

/// One line of a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Measured values by label (such as `seuil_ms`, `raw_ms`).
    pub values: Vec<(String, f64)>,
    /// The ratio the suite is about, when there is one.
    pub ratio: Option<f64>,
    /// Further ratios by label (such as `seuil/duckdb`), when the suite has
    /// more than one side to compare with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<(String, f64)>,
}

/// A suite's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Suite name.
    pub suite: String,
    /// How the run was set up (data size, repetitions...).
    pub setup: Vec<(String, String)>,
    /// The measurements.
    pub measurements: Vec<Measurement>,
    /// Summary lines (such as the median ratio).
    pub summary: Vec<(String, String)>,
}

impl Report {
    /// The report as an aligned text table.
    pub fn to_table(&self) -> String {
        let mut out = format!("suite {}\n", self.suite);
        for (key, value) in &self.setup {
            out.push_str(&format!("  {key}: {value}\n"));
        }
        for m in &self.measurements {
            let values: Vec<String> = m
                .values
                .iter()
                .map(|(label, v)| format!("{label}={v:.1}"))
                .collect();
            let mut ratio = m.ratio.map_or(String::new(), |r| format!("  ratio {r:.2}"));
            for (label, r) in &m.ratios {
                ratio.push_str(&format!("  {label} {r:.2}"));
            }
            out.push_str(&format!("  {:<40} {}{ratio}\n", m.name, values.join("  ")));
        }
        for (key, value) in &self.summary {
            out.push_str(&format!("  {key}: {value}\n"));
        }
        out
    }
}

/// The median of some values (0 for none).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}
