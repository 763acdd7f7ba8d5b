//! Typical statistician queries at scale: each query's time through seuil
//! (rewrite, release, result) and through raw DataFusion on the same SQL and
//! the same Parquet files without a policy, measured in one run, and the
//! ratio seuil / raw (target: median at most 1.5).

use std::path::PathBuf;
use std::time::Instant;

use datafusion::prelude::SessionContext;
use seuil_engine::{Engine, EngineOptions, QueryTimings, User};
use seuil_policies::PolicySource;

use super::{TimedQuery, time_query};
use crate::report::{Measurement, Report, median};

/// The query set: what a statistician runs first on the SNDS.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "persons by département",
        "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY ben_res_dpt",
    ),
    (
        "persons by département and age band",
        "SELECT ben_res_dpt, (2023 - ben_nai_ann) / 10 * 10 AS age_band, count(*) FROM ir_ben_r GROUP BY 1, 2",
    ),
    (
        "claims by care nature",
        "SELECT prs_nat_ref, count(*) FROM er_prs_f GROUP BY prs_nat_ref",
    ),
    (
        "cost by care nature and year",
        "SELECT prs_nat_ref, date_part('year', exe_soi_dtd) AS year, sum(prs_pai_mnt), sum(bse_rem_mnt) FROM er_prs_f GROUP BY 1, 2",
    ),
    (
        "claims per person distribution",
        "SELECT n, count(*) FROM (SELECT ben_nir_psa, count(*) AS n FROM er_prs_f GROUP BY ben_nir_psa) GROUP BY n",
    ),
    (
        "claims by département (join)",
        "SELECT b.ben_res_dpt, count(*), count(DISTINCT b.ben_nir_ano) FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa GROUP BY 1",
    ),
    (
        "stays by diagnosis chapter",
        "SELECT substr(dgn_pal, 1, 1) AS chapter, count(*), avg(sej_nbj) FROM t_mco_b GROUP BY 1",
    ),
    (
        "stays by diagnosis label and sex (joins)",
        "SELECT r.libelle, bn.ben_sex_cod, count(*) FROM t_mco_b s JOIN t_mco_c c ON s.eta_num = c.eta_num AND s.rsa_num = c.rsa_num JOIN ir_ben_r bn ON c.nir_ano_17 = bn.ben_nir_psa JOIN ref_cim10 r ON s.dgn_pal = r.code GROUP BY 1, 2",
    ),
    (
        "drugs by ATC class and year",
        "SELECT substr(pha_atc_cla, 1, 3) AS atc, date_part('year', exe_soi_dtd) AS year, sum(pha_act_qsn) FROM er_pha_f GROUP BY 1, 2",
    ),
    (
        "long-term illnesses by number",
        "SELECT imb_ald_num, count(DISTINCT ben_nir_psa) FROM ir_imb_r GROUP BY 1",
    ),
];

/// Arguments of the queries suite.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Data folder; generated with `--persons` when it holds no tables.
    #[arg(long, default_value = "data/bench-1m")]
    pub data: PathBuf,
    /// Persons to generate when the data folder is empty.
    #[arg(long, default_value_t = 1_000_000)]
    pub persons: u64,
    /// Timed runs per query and side (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

async fn time_raw(ctx: &SessionContext, sql: &str) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok((
        started.elapsed().as_secs_f64() * 1000.0,
        batches.iter().map(|b| b.num_rows()).sum(),
    ))
}

/// The best (smallest) of some times.
pub fn best(times: &[f64]) -> f64 {
    times.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Runs the suite.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    super::ensure_data(&args.data, args.persons)?;
    let policy = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let index_existed = args.data.join(".seuil-index").is_dir();
    let opening = Instant::now();
    let (engine, _) = Engine::open_files(&policy, &args.data, EngineOptions::default()).await?;
    let open_seconds = opening.elapsed().as_secs_f64();
    let index = match (engine.data().person_index(), index_existed) {
        (None, _) => "none (scans join to the person)".to_string(),
        (Some(_), true) => format!("reused; engine opened in {open_seconds:.1} s"),
        (Some(_), false) => format!("built when the engine opened, in {open_seconds:.1} s"),
    };
    let raw =
        SessionContext::new_with_config(seuil_engine::session_config(&EngineOptions::default()));
    for (name, table) in engine.data().tables() {
        raw.register_table(name.as_str(), table.clone())?;
    }
    let alice = User::new("bench", "researcher");
    let mut measurements = Vec::new();
    let mut ratios = Vec::new();
    for (name, sql) in QUERIES {
        // Warm the file caches and plans of both sides alike.
        time_query(&engine, &alice, sql).await?;
        time_raw(&raw, sql).await?;
        let (mut seuil_times, mut raw_times) = (Vec::new(), Vec::new());
        let (mut released, mut raw_cells) = (0, 0);
        let mut fastest: Option<(f64, QueryTimings)> = None;
        for _ in 0..args.runs {
            let TimedQuery {
                ms, rows, timings, ..
            } = time_query(&engine, &alice, sql).await?;
            seuil_times.push(ms);
            if fastest.is_none_or(|(best_ms, _)| ms < best_ms) {
                fastest = Some((ms, timings));
            }
            released = rows;
            let (ms, rows) = time_raw(&raw, sql).await?;
            raw_times.push(ms);
            raw_cells = rows;
        }
        let (seuil_ms, raw_ms) = (best(&seuil_times), best(&raw_times));
        let ratio = seuil_ms / raw_ms;
        ratios.push(ratio);
        measurements.push(Measurement {
            name: (*name).to_string(),
            values: vec![
                ("seuil_ms".into(), seuil_ms),
                ("raw_ms".into(), raw_ms),
                (
                    "seuil_planning_ms".into(),
                    fastest.map_or(0.0, |(_, t)| t.planning.as_secs_f64() * 1000.0),
                ),
                (
                    "seuil_cells_ms".into(),
                    fastest.map_or(0.0, |(_, t)| t.computing_cells.as_secs_f64() * 1000.0),
                ),
                ("released_cells".into(), released as f64),
                ("raw_cells".into(), raw_cells as f64),
            ],
            ratio: Some(ratio),
        });
    }
    let median_ratio = median(&mut ratios);
    Ok(Report {
        suite: "queries".into(),
        setup: vec![
            ("data".into(), args.data.display().to_string()),
            ("person index".into(), index),
            (
                "runs per query and side".into(),
                format!("{} (best of), after a warm-up", args.runs),
            ),
            (
                "cores".into(),
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .to_string(),
            ),
        ],
        measurements,
        summary: vec![
            (
                "median ratio seuil / raw".into(),
                format!("{median_ratio:.2}"),
            ),
            ("target".into(), "median ratio at most 1.5".into()),
        ],
    })
}
