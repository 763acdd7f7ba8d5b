//! Typical statistician queries at scale: each query's time through seuil
//! (rewrite, release, result), through raw DataFusion and raw DuckDB on the
//! same SQL and the same Parquet files without a policy, and through the
//! threshold SQL a statistician would write by hand for DuckDB
//! ([`Query::handwritten`]), measured in one run; the ratios of seuil to
//! each. Targets (issue 12): every query at most 2 times raw DuckDB and raw
//! DataFusion, the median at most 1.2 times raw DataFusion, every query
//! faster than the hand-written SQL.
//!
//! DuckDB runs in its own process ([`crate::duckdb`]), all of its queries
//! before the engine opens; when it cannot be set up, the suite reports
//! seuil against DataFusion and says why DuckDB is missing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::prelude::SessionContext;
use seuil_engine::{Engine, EngineOptions, IndexOpening, QueryTimings, User};
use seuil_policies::PolicySource;

use super::{TimedQuery, time_query};
use crate::duckdb;
use crate::report::{Measurement, Report, median};

/// One query of the set.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// What it asks.
    pub name: &'static str,
    /// The SQL a statistician sends to seuil; the raw sides (DataFusion,
    /// DuckDB) run it as is, without a policy.
    pub sql: &'static str,
    /// The SQL a careful statistician would write by hand to get threshold
    /// mode's cells without seuil, timed in DuckDB: each row joined to the
    /// person (`ir_ben_r` through `ben_nir_psa`; hospital stays through
    /// `t_mco_c`) and cells of fewer than 11 distinct persons left out by
    /// `HAVING`. It does less than seuil (no clamping of sums, no threshold
    /// per value, no dominance), so it is the least a release needs.
    pub handwritten: &'static str,
}

/// The query set: what a statistician runs first on the SNDS.
pub const QUERIES: &[Query] = &[
    Query {
        name: "persons by département",
        sql: "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY ben_res_dpt",
        handwritten: "SELECT b.ben_res_dpt, count(*) FROM ir_ben_r b GROUP BY b.ben_res_dpt \
                      HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
    Query {
        name: "persons by département and age band",
        sql: "SELECT ben_res_dpt, (2023 - ben_nai_ann) / 10 * 10 AS age_band, count(*) FROM ir_ben_r GROUP BY 1, 2",
        handwritten: "SELECT b.ben_res_dpt, (2023 - b.ben_nai_ann) / 10 * 10 AS age_band, count(*) \
                      FROM ir_ben_r b GROUP BY 1, 2 HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
    Query {
        name: "claims by care nature",
        sql: "SELECT prs_nat_ref, count(*) FROM er_prs_f GROUP BY prs_nat_ref",
        handwritten: "SELECT p.prs_nat_ref, count(*) \
                      FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa \
                      GROUP BY p.prs_nat_ref HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
    Query {
        name: "cost by care nature and year",
        sql: "SELECT prs_nat_ref, date_part('year', exe_soi_dtd) AS year, sum(prs_pai_mnt), sum(bse_rem_mnt) FROM er_prs_f GROUP BY 1, 2",
        handwritten: "SELECT p.prs_nat_ref, date_part('year', p.exe_soi_dtd) AS year, sum(p.prs_pai_mnt), sum(p.bse_rem_mnt) \
                      FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa \
                      GROUP BY 1, 2 HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
    Query {
        name: "claims per person distribution",
        sql: "SELECT n, count(*) FROM (SELECT ben_nir_psa, count(*) AS n FROM er_prs_f GROUP BY ben_nir_psa) GROUP BY n",
        // Per person (not per source id), then cells of 11 persons or more:
        // each inner row is one person.
        handwritten: "SELECT n, count(*) FROM (\
                          SELECT b.ben_nir_ano, count(*) AS n \
                          FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa \
                          GROUP BY b.ben_nir_ano) \
                      GROUP BY n HAVING count(*) >= 11",
    },
    Query {
        name: "claims by département (join)",
        sql: "SELECT b.ben_res_dpt, count(*), count(DISTINCT b.ben_nir_ano) FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa GROUP BY 1",
        handwritten: "SELECT b.ben_res_dpt, count(*), count(DISTINCT b.ben_nir_ano) \
                      FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa \
                      GROUP BY 1 HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
    Query {
        name: "stays by diagnosis chapter",
        sql: "SELECT substr(dgn_pal, 1, 1) AS chapter, count(*), avg(sej_nbj) FROM t_mco_b GROUP BY 1",
        handwritten: "SELECT substr(s.dgn_pal, 1, 1) AS chapter, count(*), avg(s.sej_nbj) \
                      FROM t_mco_b s JOIN t_mco_c c ON s.eta_num = c.eta_num AND s.rsa_num = c.rsa_num \
                      JOIN ir_ben_r b ON c.nir_ano_17 = b.ben_nir_psa \
                      GROUP BY 1 HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
    Query {
        name: "stays by diagnosis label and sex (joins)",
        sql: "SELECT r.libelle, bn.ben_sex_cod, count(*) FROM t_mco_b s JOIN t_mco_c c ON s.eta_num = c.eta_num AND s.rsa_num = c.rsa_num JOIN ir_ben_r bn ON c.nir_ano_17 = bn.ben_nir_psa JOIN ref_cim10 r ON s.dgn_pal = r.code GROUP BY 1, 2",
        handwritten: "SELECT r.libelle, bn.ben_sex_cod, count(*) \
                      FROM t_mco_b s JOIN t_mco_c c ON s.eta_num = c.eta_num AND s.rsa_num = c.rsa_num \
                      JOIN ir_ben_r bn ON c.nir_ano_17 = bn.ben_nir_psa JOIN ref_cim10 r ON s.dgn_pal = r.code \
                      GROUP BY 1, 2 HAVING count(DISTINCT bn.ben_nir_ano) >= 11",
    },
    Query {
        name: "drugs by ATC class and year",
        sql: "SELECT substr(pha_atc_cla, 1, 3) AS atc, date_part('year', exe_soi_dtd) AS year, sum(pha_act_qsn) FROM er_pha_f GROUP BY 1, 2",
        handwritten: "SELECT substr(f.pha_atc_cla, 1, 3) AS atc, date_part('year', f.exe_soi_dtd) AS year, sum(f.pha_act_qsn) \
                      FROM er_pha_f f JOIN ir_ben_r b ON f.ben_nir_psa = b.ben_nir_psa \
                      GROUP BY 1, 2 HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
    Query {
        name: "long-term illnesses by number",
        sql: "SELECT imb_ald_num, count(DISTINCT ben_nir_psa) FROM ir_imb_r GROUP BY 1",
        handwritten: "SELECT i.imb_ald_num, count(DISTINCT i.ben_nir_psa) \
                      FROM ir_imb_r i JOIN ir_ben_r b ON i.ben_nir_psa = b.ben_nir_psa \
                      GROUP BY 1 HAVING count(DISTINCT b.ben_nir_ano) >= 11",
    },
];

/// What every suite over one data folder of queries takes: the data, the
/// runs, and which queries.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Data folder; generated with `--persons` when it holds no tables.
    #[arg(long, default_value = "data/bench-1m")]
    pub data: PathBuf,
    /// Persons to generate when the data folder is empty.
    #[arg(long, default_value_t = 1_000_000)]
    pub persons: u64,
    /// Timed runs per query and side (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Only the queries whose name contains this text (for profiling one).
    #[arg(long)]
    pub only: Option<String>,
}

impl RunArgs {
    /// Whether the query named `name` is to be run.
    pub fn selects(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| name.contains(only.as_str()))
    }
}

/// Arguments of the queries and magnitudes suites.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The data, the runs, the queries.
    #[command(flatten)]
    pub run: RunArgs,
    /// Leave DuckDB out (it is timed through its Python package, installed
    /// on first use into benchmarks/.venv).
    #[arg(long)]
    pub no_duckdb: bool,
}

/// Runs `sql` on a raw DataFusion session: milliseconds to the last batch,
/// and rows.
pub async fn time_raw(ctx: &SessionContext, sql: &str) -> anyhow::Result<(f64, usize)> {
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

/// Times `(name, sql)` pairs in DuckDB unless `--no-duckdb`; the run, when
/// there is one, and the setup lines that say what ran or why not.
pub fn duckdb_side(
    data: &Path,
    args: &Args,
    queries: &[(&str, &str)],
) -> (Option<duckdb::Run>, Vec<(String, String)>) {
    if args.no_duckdb {
        return (
            None,
            vec![("duckdb".into(), "left out (--no-duckdb)".into())],
        );
    }
    match duckdb::time_queries(data, args.run.runs, queries) {
        Ok(run) => {
            let mut setup = vec![("duckdb".into(), run.describe())];
            for (name, error) in run.failures() {
                setup.push((format!("duckdb failed on {name}"), error.to_string()));
            }
            (Some(run), setup)
        }
        Err(error) => {
            eprintln!("DuckDB left out: {error:#}");
            (
                None,
                vec![("duckdb".into(), format!("missing, not measured: {error:#}"))],
            )
        }
    }
}

/// Whether every query's ratio is at most `limit` (below it when `strict`):
/// "met", or the queries over it, and those without a ratio.
pub fn every(ratios: &[(&str, Option<f64>)], limit: f64, strict: bool) -> String {
    let missing: Vec<&str> = ratios
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(name, _)| *name)
        .collect();
    if missing.len() == ratios.len() {
        return "not measured".into();
    }
    let over: Vec<String> = ratios
        .iter()
        .filter_map(|(name, r)| {
            r.filter(|r| if strict { *r >= limit } else { *r > limit })
                .map(|r| format!("{name} ({r:.2})"))
        })
        .collect();
    let mut verdict = if over.is_empty() {
        "met".to_string()
    } else {
        format!("not met: {}", over.join(", "))
    };
    if !missing.is_empty() {
        verdict.push_str(&format!("; not measured for {}", missing.join(", ")));
    }
    verdict
}

/// The median of the ratios measured, formatted.
pub fn median_of(ratios: &[(&str, Option<f64>)]) -> String {
    let mut measured: Vec<f64> = ratios.iter().filter_map(|(_, r)| *r).collect();
    if measured.is_empty() {
        "not measured".into()
    } else {
        format!("{:.2}", median(&mut measured))
    }
}

/// The name the hand-written SQL of `query` is sent to DuckDB under.
fn handwritten_name(query: &Query) -> String {
    format!("{} [hand-written]", query.name)
}

/// Runs the suite.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    super::ensure_data(&args.run.data, args.run.persons)?;
    let queries: Vec<&Query> = QUERIES
        .iter()
        .filter(|q| args.run.selects(q.name))
        .collect();
    let handwritten_names: Vec<String> = queries.iter().map(|q| handwritten_name(q)).collect();
    let duckdb_queries: Vec<(&str, &str)> = queries
        .iter()
        .map(|q| (q.name, q.sql))
        .chain(
            queries
                .iter()
                .zip(&handwritten_names)
                .map(|(q, name)| (name.as_str(), q.handwritten)),
        )
        .collect();
    let (duckdb_run, duckdb_setup) = duckdb_side(&args.run.data, args, &duckdb_queries);
    let policy = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let opening = Instant::now();
    let (engine, _) = Engine::open_files(&policy, &args.run.data, EngineOptions::default()).await?;
    let open_seconds = opening.elapsed().as_secs_f64();
    let index = match engine.data().person_index().map(|i| i.opening()) {
        None => "none (scans join to the person)".to_string(),
        Some(IndexOpening::Reused) => format!("reused; engine opened in {open_seconds:.1} s"),
        Some(IndexOpening::Built(took)) => format!(
            "built in {:.1} s when the engine opened (in {open_seconds:.1} s)",
            took.as_secs_f64()
        ),
    };
    let raw =
        SessionContext::new_with_config(seuil_engine::session_config(&EngineOptions::default()));
    for (name, table) in engine.data().tables() {
        raw.register_table(name.as_str(), table.clone())?;
    }
    let alice = User::new("bench", "researcher");
    let mut measurements = Vec::new();
    let (mut to_raw, mut to_duckdb, mut to_handwritten) = (Vec::new(), Vec::new(), Vec::new());
    for (query, handwritten) in queries.iter().zip(&handwritten_names) {
        let sql = query.sql;
        // Warm the file caches and plans of both sides alike.
        time_query(&engine, &alice, sql).await?;
        time_raw(&raw, sql).await?;
        let (mut seuil_times, mut raw_times) = (Vec::new(), Vec::new());
        let (mut released, mut raw_cells) = (0, 0);
        let mut fastest: Option<(f64, QueryTimings)> = None;
        for _ in 0..args.run.runs {
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
        let mut values = vec![
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
        ];
        let mut ratios = Vec::new();
        let duckdb = duckdb_run.as_ref().and_then(|run| run.ms(query.name));
        let by_hand = duckdb_run.as_ref().and_then(|run| run.ms(handwritten));
        if let Some((ms, rows)) = duckdb {
            values.push(("duckdb_ms".into(), ms));
            values.push(("duckdb_cells".into(), rows as f64));
            ratios.push(("seuil/duckdb".into(), seuil_ms / ms));
        }
        if let Some((ms, rows)) = by_hand {
            values.push(("handwritten_ms".into(), ms));
            values.push(("handwritten_cells".into(), rows as f64));
            ratios.push(("seuil/handwritten".into(), seuil_ms / ms));
        }
        to_raw.push((query.name, Some(ratio)));
        to_duckdb.push((query.name, duckdb.map(|(ms, _)| seuil_ms / ms)));
        to_handwritten.push((query.name, by_hand.map(|(ms, _)| seuil_ms / ms)));
        measurements.push(Measurement {
            name: query.name.to_string(),
            values,
            ratio: Some(ratio),
            ratios,
        });
    }
    let mut raw_ratios: Vec<f64> = to_raw.iter().filter_map(|(_, r)| *r).collect();
    let median_raw = median(&mut raw_ratios);
    let mut setup = vec![
        ("data".into(), args.run.data.display().to_string()),
        ("person index".into(), index),
        (
            "runs per query and side".into(),
            format!("{} (best of), after a warm-up", args.run.runs),
        ),
        (
            "cores".into(),
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string(),
        ),
        (
            "ratio".into(),
            "seuil / raw DataFusion (raw_ms); seuil/duckdb: seuil / raw DuckDB; \
             seuil/handwritten: seuil / hand-written threshold SQL in DuckDB"
                .into(),
        ),
    ];
    setup.extend(duckdb_setup);
    Ok(Report {
        suite: "queries".into(),
        setup,
        measurements,
        summary: vec![
            (
                "median ratio seuil / raw".into(),
                format!("{median_raw:.2}"),
            ),
            (
                "median ratio seuil / DuckDB raw".into(),
                median_of(&to_duckdb),
            ),
            (
                "median ratio seuil / hand-written".into(),
                median_of(&to_handwritten),
            ),
            (
                "target: every query at most 2x DuckDB raw".into(),
                every(&to_duckdb, 2.0, false),
            ),
            (
                "target: every query at most 2x DataFusion raw".into(),
                every(&to_raw, 2.0, false),
            ),
            (
                "target: median at most 1.2x DataFusion raw".into(),
                if median_raw <= 1.2 {
                    format!("met ({median_raw:.2})")
                } else {
                    format!("not met ({median_raw:.2})")
                },
            ),
            (
                "target: every query faster than hand-written".into(),
                every(&to_handwritten, 1.0, true),
            ),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hand_written_query_thresholds_its_cells() {
        for query in QUERIES {
            assert!(
                query.handwritten.contains(">= 11"),
                "{}: {}",
                query.name,
                query.handwritten
            );
            assert!(query.handwritten.contains("ir_ben_r"), "{}", query.name);
        }
    }

    #[test]
    fn targets_name_the_queries_over_the_limit() {
        let ratios = [("a", Some(1.5)), ("b", Some(2.5)), ("c", None)];
        assert_eq!(
            every(&ratios, 2.0, false),
            "not met: b (2.50); not measured for c"
        );
        assert_eq!(every(&[("a", Some(1.0))], 1.0, false), "met");
        assert_eq!(every(&[("a", Some(1.0))], 1.0, true), "not met: a (1.00)");
        assert_eq!(every(&[("a", None)], 1.0, true), "not measured");
        assert_eq!(median_of(&ratios), "2.00");
    }
}
