//! The neighbour's attack (rules 2, 4, 5, 6): a researcher who knows one
//! person's birth year, sex, département and commune (on which that person
//! is alone, as most synthetic persons are) asks, in a few dozen ways, for
//! their death date, diagnoses, claims, amounts, stays and identifiers.
//! Every way gives exactly the same answer (rows, metadata, or refusal) on
//! the data and on the same data without that person: nothing about them
//! comes out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use futures::TryStreamExt;
use seuil_engine::{Engine, User};
use seuil_tests::neighbours::{Target, pick_target, without_person};
use seuil_tests::oracle::raw_context;
use seuil_tests::slt::rows;
use seuil_tests::{open_engine, test_data};

/// The ways of asking, each built to single the person out.
fn ways_of_asking(t: &Target) -> Vec<String> {
    let f = t.facts("");
    let fb = t.facts("b");
    let diagnosis = &t.diagnosis;
    let amount = t.amount;
    let claims = "er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa";
    let stays = "t_mco_b s JOIN t_mco_c c ON s.eta_num = c.eta_num AND s.rsa_num = c.rsa_num JOIN ir_ben_r b ON c.nir_ano_17 = b.ben_nir_psa";
    let illnesses = "ir_ben_r b LEFT JOIN ir_imb_r i ON b.ben_nir_psa = i.ben_nir_psa";
    vec![
        // The death date.
        format!("SELECT max(ben_dcd_dte) FILTER (WHERE {f}) FROM ir_ben_r"),
        format!("SELECT min(ben_dcd_dte) FILTER (WHERE {f}) FROM ir_ben_r"),
        format!("SELECT max(CASE WHEN {f} THEN ben_dcd_dte END) FROM ir_ben_r"),
        format!(
            "SELECT max(CASE WHEN {f} THEN ben_dcd_dte ELSE DATE '1900-01-01' END) FROM ir_ben_r"
        ),
        format!(
            "SELECT min(CASE WHEN {f} THEN ben_dcd_dte ELSE DATE '2100-01-01' END) FROM ir_ben_r"
        ),
        format!(
            "SELECT median(CASE WHEN {f} THEN CAST(date_part('year', ben_dcd_dte) AS DOUBLE) END) FROM ir_ben_r"
        ),
        format!("SELECT count(ben_dcd_dte) FILTER (WHERE {f}) FROM ir_ben_r"),
        format!(
            "SELECT sum(CASE WHEN {f} AND ben_dcd_dte IS NOT NULL THEN 1 ELSE 0 END) FROM ir_ben_r"
        ),
        format!("SELECT avg(CASE WHEN {f} THEN date_part('year', ben_dcd_dte) END) FROM ir_ben_r"),
        format!(
            "SELECT stddev(CASE WHEN {f} THEN date_part('month', ben_dcd_dte) ELSE 0 END) FROM ir_ben_r"
        ),
        format!("SELECT bool_or({f} AND ben_dcd_dte IS NOT NULL) FROM ir_ben_r"),
        format!("SELECT ben_dcd_dte IS NULL AS alive, count(*) FROM ir_ben_r WHERE {f} GROUP BY 1"),
        format!(
            "SELECT date_part('year', ben_dcd_dte) AS y, count(*) FROM ir_ben_r WHERE {f} GROUP BY 1"
        ),
        // Diagnoses.
        format!("SELECT count(*) FROM {illnesses} WHERE {fb} AND i.med_mtf_cod = '{diagnosis}'"),
        format!(
            "SELECT b.ben_sex_cod, count(*) FROM {illnesses} WHERE {fb} AND i.med_mtf_cod = '{diagnosis}' GROUP BY 1"
        ),
        format!("SELECT i.med_mtf_cod, count(*) FROM {illnesses} WHERE {fb} GROUP BY 1"),
        format!("SELECT max(i.med_mtf_cod) FILTER (WHERE {fb}) FROM {illnesses}"),
        format!("SELECT count(i.imb_ald_num) FILTER (WHERE {fb}) FROM {illnesses}"),
        format!(
            "SELECT sum(CASE WHEN {fb} AND i.med_mtf_cod = '{diagnosis}' THEN 1 ELSE 0 END) FROM {illnesses}"
        ),
        format!(
            "SELECT count(DISTINCT i.med_mtf_cod) FROM {illnesses} WHERE {fb} OR b.ben_res_dpt = '048'"
        ),
        format!(
            "SELECT 'a' AS part, count(*) FROM {illnesses} WHERE {fb} UNION ALL SELECT 'b', count(*) FROM {illnesses} WHERE {fb} AND i.med_mtf_cod = '{diagnosis}'"
        ),
        format!(
            "SELECT b.ben_res_dpt, i.med_mtf_cod, count(*) FROM {illnesses} WHERE {fb} GROUP BY ROLLUP(b.ben_res_dpt, i.med_mtf_cod)"
        ),
        // Claims and amounts.
        format!("SELECT median(p.prs_pai_mnt) FILTER (WHERE {fb}) FROM {claims}"),
        format!("SELECT max(p.prs_pai_mnt) FILTER (WHERE {fb}) FROM {claims}"),
        format!("SELECT sum(p.prs_pai_mnt) FILTER (WHERE {fb}) FROM {claims}"),
        format!("SELECT avg(p.prs_pai_mnt) FILTER (WHERE {fb}) FROM {claims}"),
        format!("SELECT sum(CASE WHEN {fb} THEN p.prs_pai_mnt ELSE 0 END) FROM {claims}"),
        format!("SELECT count(*) FILTER (WHERE {fb} AND p.prs_pai_mnt = {amount}) FROM {claims}"),
        format!("SELECT p.prs_nat_ref, count(*) FROM {claims} WHERE {fb} GROUP BY 1"),
        format!("SELECT max(p.exe_soi_dtd) FILTER (WHERE {fb}) FROM {claims}"),
        format!(
            "SELECT n, count(*) FROM (SELECT ben_nir_psa, count(*) AS n FROM er_prs_f GROUP BY ben_nir_psa) q JOIN ir_ben_r b ON q.ben_nir_psa = b.ben_nir_psa WHERE {fb} GROUP BY 1"
        ),
        format!(
            "SELECT max(q.total) FILTER (WHERE {fb}) FROM (SELECT ben_nir_psa, sum(prs_pai_mnt) AS total FROM er_prs_f GROUP BY ben_nir_psa) q JOIN ir_ben_r b ON q.ben_nir_psa = b.ben_nir_psa"
        ),
        // Stays.
        format!("SELECT max(s.sej_nbj) FILTER (WHERE {fb}) FROM {stays}"),
        format!("SELECT s.dgn_pal, count(*) FROM {stays} WHERE {fb} GROUP BY 1"),
        format!("SELECT count(s.dgn_pal) FILTER (WHERE {fb} AND s.dgn_pal LIKE 'C%') FROM {stays}"),
        // Identifiers.
        format!(
            "SELECT max(c) FILTER (WHERE {f}) FROM (SELECT ben_nir_psa, lower(ben_nir_psa) AS c, ben_nai_ann, ben_sex_cod, ben_res_dpt, ben_res_com FROM ir_ben_r GROUP BY 1, 2, 3, 4, 5, 6) t"
        ),
        format!("SELECT max(ben_nir_psa) FILTER (WHERE {f}) FROM ir_ben_r"),
        format!(
            "SELECT substr(ben_nir_ano, 1, 4) AS p, count(*) FROM ir_ben_r WHERE {f} GROUP BY 1"
        ),
        format!(
            "SELECT count(*), max(ben_nai_ann) FROM (SELECT * FROM ir_ben_r WHERE {f} ORDER BY ben_nir_psa LIMIT 1) t"
        ),
        // Errors that would depend on the person.
        format!("SELECT count(*) FROM ir_ben_r WHERE CASE WHEN {f} THEN 1 / 0 = 1 ELSE false END"),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE CASE WHEN {f} THEN lpad(ben_res_com, 2147483647) = 'x' ELSE false END"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE CASE WHEN {f} THEN abs(CAST(-32768 AS SMALLINT)) = 1 ELSE false END"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE CASE WHEN {f} THEN sqrt(ben_nai_ann - 3000) > 0 ELSE false END"
        ),
        format!(
            "SELECT count(*) FROM ir_ben_r WHERE CASE WHEN {f} THEN ben_dcd_dte + INTERVAL '1000 years' > DATE '2000-01-01' ELSE false END"
        ),
        // Tables with margins around the person.
        format!(
            "SELECT ben_res_dpt, count(*) FROM ir_ben_r WHERE {f} GROUP BY GROUPING SETS ((ben_res_dpt), ())"
        ),
    ]
}

/// Everything a client sees of a query: its rows, its metadata, or its error.
async fn answer(engine: &Engine, sql: &str) -> String {
    let user = User::new("alice", "researcher");
    match engine.query(&user, sql).await {
        Ok(result) => {
            let mut metadata: Vec<String> = result
                .schema
                .metadata()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            metadata.sort();
            match result.stream.try_collect::<Vec<_>>().await {
                Ok(batches) => format!(
                    "rows {:?}\nmetadata {}",
                    rows(&batches).map_err(|e| e.0),
                    metadata.join("; ")
                ),
                Err(error) => format!("error while streaming: {error}"),
            }
        }
        Err(error) => format!("error: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_about_a_person_comes_out_however_a_neighbour_asks() {
    let data = test_data(2_000, 17);
    let with = open_engine(data.path()).await;
    let raw = raw_context(&with);
    let target = pick_target(&raw).await;
    let copy = tempfile::tempdir().expect("temporary folder");
    without_person(&raw, &target.person, copy.path()).await;
    let without = open_engine(copy.path()).await;

    let ways = ways_of_asking(&target);
    let mut refused = 0;
    for sql in &ways {
        let (a, b) = (answer(&with, sql).await, answer(&without, sql).await);
        assert_eq!(
            a, b,
            "the answer tells whether the person is there\nquery: {sql}"
        );
        assert!(
            !a.contains(&target.person)
                && !a.contains("while streaming")
                && !a.contains("failed while running"),
            "query: {sql}\n{a}"
        );
        if a.starts_with("error") {
            refused += 1;
        }
    }
    println!("{} ways of asking, {refused} refused", ways.len());
    assert!(ways.len() >= 40);
    assert!(refused > 0 && refused < ways.len());
}
