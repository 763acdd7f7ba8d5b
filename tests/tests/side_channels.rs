//! Property (rules 2 and 5): two databases that differ in one person's rows
//! give the same acceptance, the same refusal text and the same error, if
//! any, and the same metadata keys and suppression report, for every query:
//! random queries of the grammar, and queries built to fail on that one
//! person's values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use datafusion::arrow::array::{AsArray, RecordBatch};
use futures::TryStreamExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seuil_engine::{Engine, User};
use seuil_tests::neighbours::{Target, pick_target, without_person};
use seuil_tests::oracle::{assert_no_identifier, identifiers, raw_context, run_seuil};
use seuil_tests::{grammar, open_dp_engine, open_engine, test_data};

/// What a client can observe of a query besides the released values: the
/// result's columns, its metadata keys, and every metadata value but the
/// number of released cells (which the released rows show anyway); and the
/// released cells.
async fn observe(engine: &Engine, user: &User, sql: &str) -> (String, Vec<RecordBatch>) {
    match engine.query(user, sql).await {
        Ok(result) => {
            let columns: Vec<String> = result
                .schema
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect();
            let mut metadata: Vec<String> = result
                .schema
                .metadata()
                .iter()
                .map(|(k, v)| {
                    // A dp charge's id is new for each query, whatever the data.
                    if k == "seuil.cells_released" || k == "seuil.dp.charge_id" {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            metadata.sort();
            match result.stream.try_collect::<Vec<_>>().await {
                Ok(batches) => (
                    format!("ok {} [{}]", columns.join(","), metadata.join("; ")),
                    batches,
                ),
                Err(error) => (format!("error while streaming {error}"), Vec::new()),
            }
        }
        Err(error) => (format!("error {error}"), Vec::new()),
    }
}

fn attacks(t: &Target) -> Vec<String> {
    let is_target = format!(
        "ben_nai_ann = {} AND ben_res_dpt = '{}' AND ben_res_com = '{}'",
        t.birth_year, t.departement, t.commune
    );
    let amount = t.amount;
    vec![
        format!("SELECT sum(CASE WHEN {is_target} THEN 1 / 0 ELSE 0 END) FROM ir_ben_r"),
        format!(
            "SELECT sum(1 / (ben_nai_ann - {})) FROM ir_ben_r",
            t.birth_year
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE ben_nai_ann % (ben_nai_ann - {}) = 0",
            t.birth_year
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE CAST(CASE WHEN {is_target} THEN 'x' ELSE '1' END AS INT) = 1"
        ),
        format!(
            "SELECT sum(CAST(CASE WHEN {is_target} THEN '99999999999999999999999' ELSE '1' END AS BIGINT)) FROM ir_ben_r"
        ),
        format!("SELECT sum(prs_pai_mnt / (prs_pai_mnt - {amount})) FROM er_prs_f"),
        format!(
            "SELECT sum(CAST(prs_pai_mnt AS DECIMAL(12, 2)) / CAST(prs_pai_mnt - {amount} AS DECIMAL(12, 2))) FROM er_prs_f"
        ),
        format!(
            "SELECT sum(CAST(CASE WHEN {is_target} THEN 9223372036854775807 ELSE 1 END AS BIGINT)) FROM ir_ben_r"
        ),
        format!(
            "SELECT avg(CAST(CASE WHEN {is_target} THEN 9223372036854775807 ELSE 1 END AS BIGINT)) FROM ir_ben_r"
        ),
        format!(
            "SELECT sum(CASE WHEN {is_target} THEN 9223372036854775807 ELSE 0 END + 1) FROM ir_ben_r"
        ),
        format!(
            "SELECT sum(-CAST(CASE WHEN {is_target} THEN -9223372036854775808 ELSE 0 END AS BIGINT)) FROM ir_ben_r"
        ),
        format!("SELECT avg(CASE WHEN {is_target} THEN 1e308 ELSE 0 END * 10) FROM ir_ben_r"),
        format!(
            "SELECT avg(ln(ben_nai_ann - {})) FROM ir_ben_r",
            t.birth_year
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE left(ben_res_com, CASE WHEN {is_target} THEN -1000 ELSE 1 END) = ''"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE substr(ben_res_com, CASE WHEN {is_target} THEN -5 ELSE 1 END, 2) = '00'"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE substr(ben_res_com, 1, CASE WHEN {is_target} THEN -1 ELSE 1 END) = '0'"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE ben_res_com LIKE CASE WHEN {is_target} THEN '\\' ELSE '%' END"
        ),
        format!(
            "SELECT count(*) FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa WHERE p.exe_soi_dtd + CAST(CASE WHEN b.{is_target} THEN 100000000 ELSE 0 END AS INT) * INTERVAL '1 day' > DATE '2020-01-01'"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE date_part('year', ben_dcd_dte) = {}",
            t.birth_year
        ),
        format!("SELECT max(to_date(ben_res_com)) FROM ir_ben_r WHERE {is_target}"),
        format!("SELECT sum(power(10, CASE WHEN {is_target} THEN 400 ELSE 1 END)) FROM ir_ben_r"),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE split_part(ben_res_com, '0', CASE WHEN {is_target} THEN 0 ELSE 1 END) = ''"
        ),
        format!(
            "SELECT sum(round(ben_nai_ann, CASE WHEN {is_target} THEN 1000 ELSE 0 END)) FROM ir_ben_r"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE lpad(ben_res_com, CASE WHEN {is_target} THEN 2000000000 ELSE 3 END) = '001'"
        ),
        format!("SELECT ben_res_dpt, count(*) FROM ir_ben_r WHERE {is_target} GROUP BY 1"),
        format!("SELECT count(*) FROM ir_ben_r WHERE {is_target}"),
        "SELECT count(*) FROM ir_ben_r WHERE ben_nir_ano = 'x'".to_string(),
        format!(
            "SELECT CAST(ben_res_dpt AS INT) AS d, count(*) FROM ir_ben_r WHERE {is_target} GROUP BY 1"
        ),
        format!(
            "SELECT sum(CAST(CASE WHEN {is_target} THEN 300 ELSE 1 END AS TINYINT)) FROM ir_ben_r"
        ),
        format!(
            "SELECT sum(CAST(CASE WHEN {is_target} THEN 1e300 ELSE 1 END AS DECIMAL(5, 2))) FROM ir_ben_r"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE date_trunc('year', ben_dcd_dte) IS NULL AND {is_target}"
        ),
        format!(
            "SELECT n, count(*) FROM (SELECT ben_nir_psa, count(*) / (count(*) - {}) AS n FROM er_prs_f GROUP BY ben_nir_psa) GROUP BY n",
            3
        ),
    ]
}

/// Runs the attacks and random queries of the grammar as `user` on the data
/// with and without one person, each opened by `open`, and compares what a
/// client observes.
async fn one_person_changes_nothing_observable<F, Fut>(user: User, open: F)
where
    F: Fn(std::path::PathBuf) -> Fut,
    Fut: Future<Output = Engine>,
{
    let data = test_data(1_500, 3);
    let engine_a = open(data.path().to_path_buf()).await;
    let raw = raw_context(&engine_a);
    let target = pick_target(&raw).await;
    let copy = tempfile::tempdir().expect("temporary folder");
    without_person(&raw, &target.person, copy.path()).await;
    let engine_b = open(copy.path().to_path_buf()).await;

    // The copy really lacks the person.
    let persons = |engine: Engine| async move {
        let (batches, _) = run_seuil(
            &engine,
            &User::new("alice", "researcher"),
            "SELECT count(DISTINCT ben_nir_ano) FROM ir_ben_r",
        )
        .await
        .expect("count");
        batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0)
    };
    assert_eq!(
        persons(engine_a.clone()).await,
        persons(engine_b.clone()).await + 1
    );

    let ids = identifiers(&raw).await;
    let mut queries = attacks(&target);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    queries.extend((0..300).map(|_| grammar::generate(&mut rng).sql));
    let mut errors = 0;
    for sql in &queries {
        let ((a, released), (b, _)) = (
            observe(&engine_a, &user, sql).await,
            observe(&engine_b, &user, sql).await,
        );
        assert_eq!(a, b, "the answer depends on one person\nquery: {sql}");
        if a.starts_with("error") {
            errors += 1;
            // A message never quotes the data.
            assert!(!a.contains(&target.person), "{a}");
        }
        assert!(
            !a.starts_with("error query failed while running"),
            "a query failed on data (a possible side channel):\nquery: {sql}\n{a}"
        );
        // Rule 4: no released value holds an identifier.
        assert_no_identifier(&released, &ids, sql);
    }
    assert!(errors > 0, "the attacks should include refused queries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_changes_no_acceptance_refusal_or_error() {
    one_person_changes_nothing_observable(User::new("alice", "researcher"), |path| async move {
        open_engine(&path).await
    })
    .await;
}

/// The same in dp mode (rules 1, 3, 4, 5 and 8 hold there too): whether a
/// query is accepted, what an error says and what the metadata tells do
/// not depend on one person, nor does the noise's calibration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_changes_no_acceptance_refusal_or_error_in_dp_mode() {
    one_person_changes_nothing_observable(User::new("bob", "public"), |path| async move {
        open_dp_engine(&path).await
    })
    .await;
}
