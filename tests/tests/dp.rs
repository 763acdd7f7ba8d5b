//! dp mode (DESIGN.md §2, "dp" and "Budget"), in-process, against the raw
//! data:
//!
//! - calibration: each scale the metadata gives is the one the policy and
//!   the query's shape give, and ε spent is the ledger's charge;
//! - noise: released − exact follows the discrete Laplace at the reported
//!   scale (a Kolmogorov–Smirnov test), and the reported 95% intervals cover
//!   within a binomial band, at p < 1e-6 so that the test is never flaky;
//!   noise drawn at half the reported scale (a mutation of the engine) fails
//!   them;
//! - bounding: with noise made negligible, a person counts in at most
//!   `max_groups_per_person` cells and with at most `max_rows_per_cell` rows
//!   in each, and the test fails once the bound on cells is lifted;
//! - the budget: spent, it refuses with no rows, after a restart too, and
//!   32 concurrent queries of one user never overspend it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use seuil_engine::budget::BudgetLedger;
use seuil_engine::options::DpMutation;
use seuil_engine::{Engine, EngineError, EngineOptions, QueryResult, Rule, User};
use seuil_policies::PolicySource;
use seuil_tests::oracle::{raw_context, run_raw};
use seuil_tests::test_data;

/// The shipped policy with the public role's per-query ε and total budgets
/// set.
fn dp_policy(per_query: f64, budget: f64) -> String {
    let text = seuil_policies::SNDS_POLICY
        .replace(
            "epsilon_budget = 10.0",
            &format!("epsilon_budget = {budget:?}"),
        )
        .replace(
            "epsilon_per_query = 1.0",
            &format!("epsilon_per_query = {per_query:?}"),
        )
        .replace(
            "project_epsilon_budget = 100.0",
            &format!("project_epsilon_budget = {:?}", budget * 10.0),
        )
        .replace("delta_budget = 1e-6", "delta_budget = 0.5");
    assert_ne!(
        text,
        seuil_policies::SNDS_POLICY,
        "the policy changed shape"
    );
    text
}

async fn dp_engine(data: &std::path::Path, policy: &str, ledger: Arc<BudgetLedger>) -> Engine {
    mutated_engine(data, policy, ledger, DpMutation::None).await
}

/// An engine whose dp mode is weakened by `mutation`, which the tests must
/// catch.
async fn mutated_engine(
    data: &std::path::Path,
    policy: &str,
    ledger: Arc<BudgetLedger>,
    mutation: DpMutation,
) -> Engine {
    let source = PolicySource::new("dp.toml", policy.to_string());
    let options = EngineOptions {
        dp_mutation: mutation,
        ..EngineOptions::default()
    };
    let (engine, _) = Engine::open_files(&source, data, options)
        .await
        .expect("opening the engine");
    engine.with_budget(ledger)
}

fn bob() -> User {
    User::new("bob", "public")
}

async fn collect(result: QueryResult) -> Vec<RecordBatch> {
    result.stream.try_collect().await.unwrap()
}

/// Released cells keyed by their first column (as text), the second
/// column's values.
fn cells(batches: &[RecordBatch], value: usize) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for batch in batches {
        let keys = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let keys = keys.as_string::<i32>();
        let values = batch.column(value).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            out.insert(keys.value(row).to_string(), values.value(row));
        }
    }
    out
}

/// The discrete Laplace CDF of `scale` (P(x) ∝ exp(-|x| / scale)) at `k`.
fn discrete_laplace_cdf(scale: f64, k: i64) -> f64 {
    let q = (-1.0 / scale).exp();
    if k >= 0 {
        1.0 - q.powi((k + 1) as i32) / (1.0 + q)
    } else {
        q.powi((-k) as i32) / (1.0 + q)
    }
}

/// P(|X| <= t) for the discrete Laplace of `scale`.
fn discrete_laplace_within(scale: f64, t: i64) -> f64 {
    discrete_laplace_cdf(scale, t) - discrete_laplace_cdf(scale, -t - 1)
}

const BY_SEX: &str = "SELECT ben_sex_cod, count(*) FROM ir_ben_r GROUP BY 1";

#[tokio::test]
async fn every_scale_is_the_one_the_policy_and_the_query_give() {
    let data = test_data(2_000, 7);
    let ledger = Arc::new(BudgetLedger::in_memory().unwrap());
    let engine = dp_engine(data.path(), seuil_policies::SNDS_POLICY, ledger.clone()).await;
    let sql = "SELECT ben_res_dpt, count(*) AS claims, count(DISTINCT ben_nir_psa) AS persons \
               FROM ir_ben_r GROUP BY 1";
    let result = engine.query(&bob(), sql).await.unwrap();
    let schema = result.schema.clone();
    let report = result.report.clone();
    collect(result).await;
    let dp = report.dp.as_ref().expect("a dp report");
    // ε 1, split over the selection and the noisy count(*): count(DISTINCT
    // person) is the selection's own count.
    assert_eq!(dp.releases, 2);
    assert_eq!(dp.epsilon_per_release, 0.5);
    let groups = 4.0;
    let selection = &dp.selections[0];
    assert_eq!(selection.scale, groups / 0.5);
    assert_eq!(selection.pre_threshold, 19);
    assert!(selection.delta <= 1e-7 && selection.threshold > 1);
    let claims = dp.field("claims").expect("claims is noisy");
    assert_eq!(claims.mechanism, "laplace");
    assert_eq!(claims.scale, groups * 1.0 / 0.5, "max_rows_per_cell 1");
    let persons = dp.field("persons").expect("persons is noisy");
    assert_eq!(persons.mechanism, "laplace_threshold");
    assert_eq!(persons.scale, selection.scale);
    // What the client reads: the same numbers.
    let metadata = schema.metadata();
    assert_eq!(metadata["seuil.mode"], "dp");
    assert_eq!(metadata["seuil.dp.epsilon_spent"], "1");
    assert_eq!(metadata["seuil.dp.epsilon_left"], "9");
    let field = schema.field_with_name("claims").unwrap().metadata();
    assert_eq!(field["seuil.dp.scale"], "8");
    assert_eq!(field["seuil.dp.mechanism"], "laplace");
    assert!(field["seuil.dp.ci95"].parse::<f64>().unwrap() > 0.0);
    // The ledger charged exactly the query's ε.
    assert_eq!(ledger.total().unwrap(), (1, 1_000_000));
    let charge = dp.charge.as_ref().unwrap();
    assert!(ledger.has_charge(&charge.charge_id).unwrap());

    // A sum: its scale is the bounds' largest magnitude × groups over ε.
    let sum = "SELECT prs_nat_ref, sum(prs_pai_mnt) AS paid FROM er_prs_f GROUP BY 1";
    let result = engine.query(&bob(), sum).await.unwrap();
    let report = result.report.clone();
    collect(result).await;
    let dp = report.dp.unwrap();
    let bounds = engine.policy().tables["er_prs_f"].columns["prs_pai_mnt"]
        .bounds
        .unwrap();
    let paid = dp.field("paid").unwrap();
    let derived = groups * bounds.0.abs().max(bounds.1.abs()) / 0.5;
    assert!(
        (paid.scale / derived - 1.0).abs() < 1e-9,
        "{} against {derived}",
        paid.scale
    );
    assert_eq!(paid.grid, Some(2f64.powi(-10)));
}

/// What the noise test measures of released − exact over repeated runs.
struct NoiseCheck {
    /// The Kolmogorov–Smirnov distance to the discrete Laplace at the
    /// reported scale, and its critical value at p = 1e-6.
    distance: f64,
    critical: f64,
    /// How often the reported 95% interval covered, how often it should,
    /// and the binomial band of p = 1e-6 around that.
    covered: f64,
    expected: f64,
    band: f64,
}

impl NoiseCheck {
    fn passes(&self) -> bool {
        self.distance < self.critical && (self.covered - self.expected).abs() <= self.band
    }
}

/// Runs a count by sex a few hundred times under `mutation` and compares
/// its noise with the discrete Laplace at the scale the metadata reports.
async fn check_noise(mutation: DpMutation) -> NoiseCheck {
    let data = test_data(2_000, 7);
    let ledger = Arc::new(BudgetLedger::in_memory().unwrap());
    let engine = mutated_engine(data.path(), &dp_policy(1.0, 1e9), ledger, mutation).await;
    let raw = raw_context(&engine);
    let exact = cells(
        &run_raw(
            &raw,
            "SELECT ben_sex_cod, count(DISTINCT ben_nir_ano) FROM ir_ben_r GROUP BY 1",
        )
        .await,
        1,
    );
    let runs = 600;
    let mut noise: Vec<i64> = Vec::new();
    let mut scale = None;
    let mut ci = None;
    for _ in 0..runs {
        let result = engine.query(&bob(), BY_SEX).await.unwrap();
        let field = result.schema.field(1).metadata().clone();
        scale = Some(field["seuil.dp.scale"].parse::<f64>().unwrap());
        ci = Some(field["seuil.dp.ci95"].parse::<f64>().unwrap() as i64);
        for (key, value) in cells(&collect(result).await, 1) {
            noise.push(value - exact[&key]);
        }
    }
    let (scale, ci) = (scale.unwrap(), ci.unwrap());
    // ε 1 over the selection and the count: 4 cells of 1 row at ε 1/2.
    assert_eq!(scale, 8.0);
    let n = noise.len() as f64;
    assert!(n >= 1_000.0, "cells were not released: {n} values");
    noise.sort_unstable();
    // Kolmogorov–Smirnov, at the integers (conservative for a discrete
    // law).
    let (low, high) = (noise[0], noise[noise.len() - 1]);
    let mut distance: f64 = 0.0;
    let mut below = 0usize;
    for k in low..=high {
        while below < noise.len() && noise[below] <= k {
            below += 1;
        }
        distance = distance.max((below as f64 / n - discrete_laplace_cdf(scale, k)).abs());
    }
    let expected = discrete_laplace_within(scale, ci);
    assert!(expected >= 0.95);
    NoiseCheck {
        distance,
        critical: ((2.0f64 / 1e-6).ln() / (2.0 * n)).sqrt(),
        covered: noise.iter().filter(|x| x.abs() <= ci).count() as f64 / n,
        expected,
        band: 5.0 * (expected * (1.0 - expected) / n).sqrt(),
    }
}

#[tokio::test]
async fn noise_follows_the_discrete_laplace_at_the_reported_scale() {
    let check = check_noise(DpMutation::None).await;
    assert!(
        check.distance < check.critical,
        "KS distance {} over {}",
        check.distance,
        check.critical
    );
    assert!(
        (check.covered - check.expected).abs() <= check.band,
        "{} of the intervals cover, {} expected",
        check.covered,
        check.expected
    );
}

#[tokio::test]
async fn the_noise_test_catches_noise_at_half_the_reported_scale() {
    let check = check_noise(DpMutation::HalveNoise).await;
    assert!(
        !check.passes(),
        "halved noise passed: KS {} (critical {}), coverage {}",
        check.distance,
        check.critical,
        check.covered
    );
}

/// With noise made negligible, by months of care: the person-cells
/// released against the raw data's ([`Bounding`]).
/// Claims by month: over the keyed claims alone (the person-ordered scan,
/// bounded in one streaming pass) or joined to the persons (bounded by
/// DataFusion's aggregate and window).
const CLAIMS_BY_MONTH: &str = "SELECT date_trunc('month', exe_soi_dtd), count(*) AS rows_counted, \
     count(DISTINCT ben_nir_psa) AS persons FROM er_prs_f GROUP BY 1";
const CLAIMS_BY_MONTH_JOINED: &str = "SELECT date_trunc('month', p.exe_soi_dtd), \
     count(*) AS rows_counted, count(DISTINCT p.ben_nir_psa) AS persons \
     FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa GROUP BY 1";

async fn check_bounding(mutation: DpMutation, sql: &str) -> Bounding {
    let data = test_data(2_000, 7);
    let ledger = Arc::new(BudgetLedger::in_memory().unwrap());
    // An ε so large that the noise is nothing: released values are the
    // bounded ones.
    let engine = mutated_engine(data.path(), &dp_policy(1e7, 1e12), ledger, mutation).await;
    let raw = raw_context(&engine);
    let plan = engine.explain(&bob(), sql).await.unwrap().plan;
    let result = engine.query(&bob(), sql).await.unwrap();
    let batches = collect(result).await;
    let rows = cells(&batches, 1);
    let persons = cells(&batches, 2);
    assert!(!rows.is_empty());
    let all_persons = cells(
        &run_raw(
            &raw,
            "SELECT 'all', count(DISTINCT ben_nir_psa) FROM er_prs_f WHERE exe_soi_dtd >= DATE '2021-01-01'",
        )
        .await,
        1,
    )["all"];
    let unbounded: i64 = cells(
        &run_raw(
            &raw,
            "SELECT 'all', count(*) FROM (SELECT DISTINCT date_trunc('month', exe_soi_dtd), \
             ben_nir_psa FROM er_prs_f WHERE exe_soi_dtd >= DATE '2021-01-01')",
        )
        .await,
        1,
    )["all"];
    assert!(
        unbounded > 4 * all_persons,
        "the data does not test the bound: {unbounded} person-cells"
    );
    // Each person keeps exactly min(4, its cells): no fewer either.
    let bounded: i64 = cells(
        &run_raw(
            &raw,
            "SELECT 'all', sum(least(n, 4)) FROM (SELECT b.ben_nir_ano, \
             count(DISTINCT date_trunc('month', p.exe_soi_dtd)) AS n \
             FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa \
             WHERE p.exe_soi_dtd >= DATE '2021-01-01' GROUP BY 1)",
        )
        .await,
        1,
    )["all"];
    Bounding {
        released: persons.values().sum(),
        all_persons,
        bounded,
        one_row_each: rows == persons,
        streamed: plan.contains("SeuilBoundContributions"),
    }
}

/// What [`check_bounding`] found.
struct Bounding {
    /// Person-cells released.
    released: i64,
    /// Persons of the data.
    all_persons: i64,
    /// Person-cells of the data with each person's cells bounded to 4.
    bounded: i64,
    /// Whether each cell's count of rows is its count of persons.
    one_row_each: bool,
    /// Whether the plan bounds persons in one streaming pass.
    streamed: bool,
}

#[tokio::test]
async fn each_person_counts_in_few_cells_with_few_rows() {
    for (sql, streamed) in [(CLAIMS_BY_MONTH, true), (CLAIMS_BY_MONTH_JOINED, false)] {
        let found = check_bounding(DpMutation::None, sql).await;
        assert_eq!(found.streamed, streamed, "{sql}");
        assert_bounded(&found);
    }
}

fn assert_bounded(found: &Bounding) {
    assert!(
        found.one_row_each,
        "a cell counted more than one row of a person"
    );
    assert!(
        found.released <= 4 * found.all_persons,
        "{} person-cells released for {} persons",
        found.released,
        found.all_persons
    );
    // Every cell of the month is far above the threshold, so all are
    // released, with exactly the person-cells that bounding keeps.
    assert_eq!(found.released, found.bounded);
}

#[tokio::test]
async fn the_bounding_test_catches_a_lifted_group_bound() {
    for sql in [CLAIMS_BY_MONTH, CLAIMS_BY_MONTH_JOINED] {
        let found = check_bounding(DpMutation::LiftGroupBound, sql).await;
        assert!(
            found.released > 4 * found.all_persons,
            "a lifted bound passed: {} person-cells for {} persons",
            found.released,
            found.all_persons
        );
    }
}

#[tokio::test]
async fn a_spent_budget_refuses_with_no_rows_and_stays_spent_after_a_restart() {
    let data = test_data(2_000, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.sqlite");
    {
        let engine = dp_engine(
            data.path(),
            seuil_policies::SNDS_POLICY,
            Arc::new(BudgetLedger::open(&path).unwrap()),
        )
        .await;
        for i in 0..10 {
            let result = engine.query(&bob(), BY_SEX).await;
            assert!(result.is_ok(), "query {i}: {:?}", result.err());
        }
        let refused = engine.query(&bob(), BY_SEX).await.unwrap_err();
        assert_budget_refusal(&refused);
    }
    let engine = dp_engine(
        data.path(),
        seuil_policies::SNDS_POLICY,
        Arc::new(BudgetLedger::open(&path).unwrap()),
    )
    .await;
    let refused = engine.query(&bob(), BY_SEX).await.unwrap_err();
    assert_budget_refusal(&refused);
    // Another user of the project still has a budget of their own.
    let carol = User::new("carol", "public");
    assert!(engine.query(&carol, BY_SEX).await.is_ok());
}

fn assert_budget_refusal(error: &EngineError) {
    let refusal = error.refusal().expect("a refusal");
    assert_eq!(refusal.rule, Rule::Budget);
    assert!(
        refusal.message.contains("10 ε spent, 0 ε left") && refusal.message.contains("needs 1 ε"),
        "{}",
        refusal.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_of_one_user_never_overspend() {
    let data = test_data(2_000, 7);
    let ledger = Arc::new(BudgetLedger::in_memory().unwrap());
    let engine = dp_engine(data.path(), seuil_policies::SNDS_POLICY, ledger.clone()).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                match engine.query(&bob(), BY_SEX).await {
                    Ok(result) => {
                        collect(result).await;
                        true
                    }
                    Err(error) => {
                        assert_eq!(error.refusal().map(|r| r.rule), Some(Rule::Budget));
                        false
                    }
                }
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        if task.await.unwrap() {
            succeeded += 1;
        }
    }
    assert_eq!(succeeded, 10);
    assert_eq!(ledger.total().unwrap(), (10, 10_000_000));
}

#[tokio::test]
async fn what_has_no_mechanism_is_refused_before_anything_is_charged() {
    let data = test_data(500, 7);
    let ledger = Arc::new(BudgetLedger::in_memory().unwrap());
    let engine = dp_engine(data.path(), seuil_policies::SNDS_POLICY, ledger.clone()).await;
    for sql in [
        "SELECT ben_sex_cod, ben_res_dpt, count(*) FROM ir_ben_r GROUP BY ROLLUP (ben_sex_cod, ben_res_dpt)",
        "SELECT prs_nat_ref, max(prs_pai_mnt) FROM er_prs_f GROUP BY 1",
        "SELECT count(DISTINCT ben_res_dpt) FROM ir_ben_r",
        "SELECT ben_sex_cod, stddev(ben_nai_ann) FROM ir_ben_r GROUP BY 1",
        "SELECT ben_sex_cod, sum(ben_nai_ann) FROM ir_ben_r GROUP BY 1",
    ] {
        let error = engine.query(&bob(), sql).await.unwrap_err();
        assert!(error.refusal().is_some(), "{sql}: {error}");
    }
    assert_eq!(ledger.total().unwrap(), (0, 0));
    // An engine without a ledger serves no dp role.
    let (bare, _) = Engine::open_files(
        &PolicySource::new("snds.toml", seuil_policies::SNDS_POLICY),
        data.path(),
        EngineOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(
        bare.query(&bob(), BY_SEX).await.unwrap_err(),
        EngineError::Setup(_)
    ));
    // Values the rest of the plan computes from noisy values are released
    // as post-processing, with no interval of their own.
    let result = engine
        .query(
            &bob(),
            "SELECT ben_sex_cod, count(*) * 2 AS twice FROM ir_ben_r GROUP BY 1",
        )
        .await
        .unwrap();
    assert!(
        !result
            .schema
            .field(1)
            .metadata()
            .contains_key("seuil.dp.ci95")
    );
    let batches = collect(result).await;
    assert!(batches.iter().all(|b| b.column(1).null_count() == 0));
}

/// Audit lines kept in memory.
#[derive(Debug, Default)]
struct RecordedAudit(std::sync::Mutex<Vec<seuil_engine::audit::AuditRecord>>);

#[async_trait::async_trait]
impl seuil_engine::audit::AuditSink for RecordedAudit {
    async fn append(
        &self,
        record: seuil_engine::audit::AuditRecord,
    ) -> Result<(), seuil_engine::audit::AuditUnavailable> {
        self.0.lock().unwrap().push(record);
        Ok(())
    }
}

#[tokio::test]
async fn a_query_that_fails_after_its_charge_has_the_charge_on_its_audit_line() {
    let data = test_data(2_000, 7);
    let ledger = Arc::new(BudgetLedger::in_memory().unwrap());
    let source = PolicySource::new("snds.toml", seuil_policies::SNDS_POLICY);
    // Fewer cells allowed than the query computes: it fails once the cells
    // are computed, after the charge.
    let options = EngineOptions {
        max_cells: 2,
        ..EngineOptions::default()
    };
    let (engine, _) = Engine::open_files(&source, data.path(), options)
        .await
        .unwrap();
    let audit = Arc::new(RecordedAudit::default());
    let engine = engine.with_budget(ledger.clone()).with_audit(audit.clone());
    let error = engine
        .query(
            &bob(),
            "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY 1",
        )
        .await
        .unwrap_err();
    assert!(error.refusal().is_none(), "{error}");
    assert_eq!(ledger.total().unwrap(), (1, 1_000_000));
    let last = audit.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.outcome, seuil_engine::audit::Outcome::Error);
    let charge = last.budget.as_ref().expect("the charge on the audit line");
    assert_eq!(Some(&charge.charge_id), last.query_id.as_ref());
    assert_eq!(charge.micro_epsilon, 1_000_000);
    assert!(ledger.has_charge(&charge.charge_id).unwrap());
    // A refusal before the charge has none.
    engine
        .query(
            &bob(),
            "SELECT prs_nat_ref, max(prs_pai_mnt) FROM er_prs_f GROUP BY 1",
        )
        .await
        .unwrap_err();
    assert!(audit.0.lock().unwrap().last().unwrap().budget.is_none());
}
