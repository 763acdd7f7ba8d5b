//! The cost of rules 6 and 7 (dominance and secondary suppression) over
//! threshold mode alone, on the statistician query set plus tables with
//! margins, in one run on the same data.
//!
//! Two engines share the data: one whose researcher role has no dominance
//! rule, one whose researcher has both the (n, k) rule of the shipped policy
//! and a p% rule. Secondary suppression is part of every release of a table
//! with margins and has no switch, so threshold mode alone is the first
//! engine's time minus the secondary suppression time the engine reports
//! ([`seuil_engine::QueryTimings`]).
//!
//! Each query also runs as is in raw DuckDB over the same files (no policy),
//! for the ratio threshold / DuckDB raw.

use std::time::Duration;

use seuil_engine::{DataCatalog, Engine, EngineOptions, User};
use seuil_policies::{Dominance, Policy, PolicySource};

use super::queries::{Args, QUERIES, best, duckdb_side};
use super::{TimedQuery, time_query};
use crate::report::{Measurement, Report, median};

/// Tables with margins: the released cells and their totals.
const WITH_MARGINS: &[(&str, &str)] = &[
    (
        "cost by care nature and year, ROLLUP",
        "SELECT prs_nat_ref, date_part('year', exe_soi_dtd) AS year, count(*), sum(prs_pai_mnt) \
         FROM er_prs_f GROUP BY ROLLUP(prs_nat_ref, date_part('year', exe_soi_dtd))",
    ),
    (
        "persons by département and sex, CUBE",
        "SELECT ben_res_dpt, ben_sex_cod, count(*) FROM ir_ben_r GROUP BY CUBE(ben_res_dpt, ben_sex_cod)",
    ),
    (
        "stay days by chapter, sex and year, CUBE",
        "SELECT substr(s.dgn_pal, 1, 1) AS chapter, b.ben_sex_cod, date_part('year', c.exe_soi_dtd) AS year, sum(s.sej_nbj) \
         FROM t_mco_b s JOIN t_mco_c c ON s.eta_num = c.eta_num AND s.rsa_num = c.rsa_num \
         JOIN ir_ben_r b ON c.nir_ano_17 = b.ben_nir_psa \
         GROUP BY CUBE(substr(s.dgn_pal, 1, 1), b.ben_sex_cod, date_part('year', c.exe_soi_dtd))",
    ),
];

/// The shipped policy with the researcher's dominance rules replaced.
fn with_dominance(
    data: &DataCatalog,
    dominance: Option<Dominance>,
    p_percent: Option<f64>,
) -> anyhow::Result<Policy> {
    let source = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let (mut policy, _) = seuil_policies::load(&source, Some(&data.data_schema()))?;
    let researcher = policy
        .roles
        .get_mut("researcher")
        .ok_or_else(|| anyhow::anyhow!("the shipped policy has no researcher role"))?;
    researcher.dominance = dominance;
    researcher.p_percent = p_percent;
    Ok(policy)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs the suite.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    super::ensure_data(&args.run.data, args.run.persons)?;
    let queries: Vec<(&str, &str)> = QUERIES
        .iter()
        .map(|q| (q.name, q.sql))
        .chain(WITH_MARGINS.iter().copied())
        .filter(|(name, _)| args.run.selects(name))
        .collect();
    let (duckdb_run, duckdb_setup) = duckdb_side(&args.run.data, args, &queries);
    let options = EngineOptions::default();
    let data = DataCatalog::open(&args.run.data, &options).await?;
    let threshold = Engine::open(
        with_dominance(&data, None, None)?,
        data.clone(),
        options.clone(),
    )
    .await?;
    let dominance = Some(Dominance { n: 2, k: 85.0 });
    let protected =
        Engine::open(with_dominance(&data, dominance, Some(10.0))?, data, options).await?;
    let user = User::new("bench", "researcher");
    let mut measurements = Vec::new();
    let (mut ratios, mut to_duckdb) = (Vec::new(), Vec::new());
    for (name, sql) in queries {
        time_query(&threshold, &user, sql).await?;
        time_query(&protected, &user, sql).await?;
        let (mut alone, mut full, mut secondary) = (Vec::new(), Vec::new(), Vec::new());
        let (mut suppressed_alone, mut suppressed_full) = (0, 0);
        for _ in 0..args.run.runs {
            let TimedQuery {
                ms: total,
                timings,
                suppressed,
                ..
            } = time_query(&threshold, &user, sql).await?;
            alone.push(total - ms(timings.secondary_suppression));
            suppressed_alone = suppressed;
            let TimedQuery {
                ms: total,
                timings,
                suppressed,
                ..
            } = time_query(&protected, &user, sql).await?;
            full.push(total);
            secondary.push(ms(timings.secondary_suppression));
            suppressed_full = suppressed;
        }
        let (alone_ms, full_ms) = (best(&alone), best(&full));
        let ratio = full_ms / alone_ms;
        ratios.push(ratio);
        let mut values = vec![
            ("threshold_ms".into(), alone_ms),
            ("protected_ms".into(), full_ms),
            ("secondary_ms".into(), best(&secondary)),
            ("suppressed_threshold".into(), suppressed_alone as f64),
            ("suppressed_protected".into(), suppressed_full as f64),
        ];
        let mut other_ratios = Vec::new();
        if let Some((ms, _)) = duckdb_run.as_ref().and_then(|run| run.ms(name)) {
            values.push(("duckdb_ms".into(), ms));
            other_ratios.push(("threshold/duckdb".into(), alone_ms / ms));
            to_duckdb.push(alone_ms / ms);
        }
        measurements.push(Measurement {
            name: name.to_string(),
            values,
            ratio: Some(ratio),
            ratios: other_ratios,
        });
    }
    let median_ratio = median(&mut ratios);
    let max_ratio = ratios.iter().copied().fold(0.0, f64::max);
    let median_duckdb = if to_duckdb.is_empty() {
        "not measured".to_string()
    } else {
        format!("{:.2}", median(&mut to_duckdb))
    };
    let mut setup = vec![
        ("data".into(), args.run.data.display().to_string()),
        (
            "threshold".into(),
            "researcher without dominance; secondary suppression time subtracted".into(),
        ),
        (
            "protected".into(),
            "researcher with (2, 85) dominance, p% = 10, secondary suppression".into(),
        ),
        (
            "runs per query and engine".into(),
            format!("{} (best of), after a warm-up", args.run.runs),
        ),
        (
            "threshold/duckdb".into(),
            "threshold / raw DuckDB on the same SQL, without a policy".into(),
        ),
    ];
    setup.extend(duckdb_setup);
    Ok(Report {
        suite: "magnitudes".into(),
        setup,
        measurements,
        summary: vec![
            (
                "median ratio protected / threshold".into(),
                format!("{median_ratio:.2}"),
            ),
            (
                "largest ratio protected / threshold".into(),
                format!("{max_ratio:.2}"),
            ),
            ("median ratio threshold / DuckDB raw".into(), median_duckdb),
        ],
    })
}
