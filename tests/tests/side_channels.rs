//! Property (rule 5): two databases that differ in one person's rows give
//! the same acceptance, the same refusal text and the same error, if any, for
//! every query, including queries built to fail on that one person's values.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int16Type};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::SessionContext;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seuil_engine::{Engine, User};
use seuil_tests::oracle::{raw_context, run_raw, run_seuil};
use seuil_tests::{grammar, open_engine, test_data};

/// The person whose rows one database lacks, and some of their values.
struct Target {
    person: String,
    birth_year: i16,
    departement: String,
    commune: String,
    amount: f64,
}

async fn pick_target(raw: &SessionContext) -> Target {
    // A heavy user with a hospital stay and a long-term illness: their
    // removal changes the most tables.
    let sql = "SELECT b.ben_nir_ano, b.ben_nai_ann, b.ben_res_dpt, b.ben_res_com, max(p.prs_pai_mnt) AS amount, count(*) AS claims \
               FROM ir_ben_r b JOIN er_prs_f p ON b.ben_nir_psa = p.ben_nir_psa \
               WHERE b.ben_nir_psa IN (SELECT nir_ano_17 FROM t_mco_c) AND b.ben_nir_psa IN (SELECT ben_nir_psa FROM ir_imb_r) \
               GROUP BY 1, 2, 3, 4 ORDER BY claims DESC, 1 LIMIT 1";
    let batches = run_raw(raw, sql).await;
    let batch = &batches[0];
    Target {
        person: batch.column(0).as_string::<i32>().value(0).to_string(),
        birth_year: batch.column(1).as_primitive::<Int16Type>().value(0),
        departement: batch.column(2).as_string::<i32>().value(0).to_string(),
        commune: batch.column(3).as_string::<i32>().value(0).to_string(),
        amount: batch.column(4).as_primitive::<Float64Type>().value(0),
    }
}

/// Writes a copy of the data without one person's rows, in every table.
async fn without_person(raw: &SessionContext, person: &str, out: &Path) {
    let psa = format!("(SELECT ben_nir_psa FROM ir_ben_r WHERE ben_nir_ano = '{person}')");
    let stays =
        format!("(SELECT eta_num || '/' || rsa_num FROM t_mco_c WHERE nir_ano_17 IN {psa})");
    let tables: BTreeMap<&str, String> = [
        (
            "ir_ben_r",
            format!("SELECT * FROM ir_ben_r WHERE ben_nir_ano <> '{person}'"),
        ),
        (
            "er_prs_f",
            format!("SELECT * FROM er_prs_f WHERE ben_nir_psa NOT IN {psa}"),
        ),
        (
            "er_pha_f",
            format!("SELECT * FROM er_pha_f WHERE ben_nir_psa NOT IN {psa}"),
        ),
        (
            "ir_imb_r",
            format!("SELECT * FROM ir_imb_r WHERE ben_nir_psa NOT IN {psa}"),
        ),
        (
            "t_mco_c",
            format!("SELECT * FROM t_mco_c WHERE nir_ano_17 NOT IN {psa}"),
        ),
        (
            "t_mco_b",
            format!("SELECT * FROM t_mco_b WHERE eta_num || '/' || rsa_num NOT IN {stays}"),
        ),
        ("ref_cim10", "SELECT * FROM ref_cim10".into()),
        ("ref_atc", "SELECT * FROM ref_atc".into()),
        ("ref_dpt", "SELECT * FROM ref_dpt".into()),
    ]
    .into_iter()
    .collect();
    for (table, sql) in tables {
        let frame = raw.sql(&sql).await.expect("copy query");
        let path = out.join(format!("{table}.parquet"));
        frame
            .write_parquet(
                path.to_str().expect("utf-8 path"),
                DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await
            .expect("writing the copy");
    }
}

/// What a client can observe of a query besides the released values.
async fn observe(engine: &Engine, sql: &str) -> String {
    let user = User::new("alice", "researcher");
    match run_seuil(engine, &user, sql).await {
        Ok((batches, _)) => {
            let schema = batches
                .first()
                .map(|b| b.schema())
                .unwrap_or_else(|| Arc::new(datafusion::arrow::datatypes::Schema::empty()));
            let columns: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect();
            format!("ok {}", columns.join(","))
        }
        Err(error) => format!("error {error}"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_changes_no_acceptance_refusal_or_error() {
    let data = test_data(1_500, 3);
    let engine_a = open_engine(data.path()).await;
    let raw = raw_context(&engine_a);
    let target = pick_target(&raw).await;
    let copy = tempfile::tempdir().expect("temporary folder");
    without_person(&raw, &target.person, copy.path()).await;
    let engine_b = open_engine(copy.path()).await;

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

    let mut queries = attacks(&target);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    queries.extend((0..150).map(|_| grammar::generate(&mut rng).seuil_sql));
    let mut errors = 0;
    for sql in &queries {
        let (a, b) = (observe(&engine_a, sql).await, observe(&engine_b, sql).await);
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
    }
    assert!(errors > 0, "the attacks should include refused queries");
}
