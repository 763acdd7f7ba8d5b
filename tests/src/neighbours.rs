//! Neighbouring databases: a copy of the synthetic SNDS without one person,
//! in every table, so that a test can check that what a query releases does
//! not depend on that person.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int8Type, Int16Type};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::SessionContext;

use crate::oracle::run_raw;

/// The person whose rows one database lacks, and what a neighbour knows of
/// them: birth year, sex, département and commune, on which they are the
/// only person.
pub struct Target {
    /// Their `ben_nir_ano`.
    pub person: String,
    /// Birth year.
    pub birth_year: i16,
    /// Sex.
    pub sex: i8,
    /// Département.
    pub departement: String,
    /// Commune.
    pub commune: String,
    /// Their largest claim.
    pub amount: f64,
    /// One of their long-term illnesses (ICD-10).
    pub diagnosis: String,
}

impl Target {
    /// The condition that singles the person out, on columns of `alias`
    /// (a scan of `ir_ben_r`), or unqualified when `alias` is empty.
    pub fn facts(&self, alias: &str) -> String {
        let a = if alias.is_empty() {
            String::new()
        } else {
            format!("{alias}.")
        };
        format!(
            "{a}ben_nai_ann = {} AND {a}ben_sex_cod = {} AND {a}ben_res_dpt = '{}' AND {a}ben_res_com = '{}'",
            self.birth_year, self.sex, self.departement, self.commune
        )
    }
}

/// A heavy user with a hospital stay and a long-term illness (their removal
/// changes the most tables), alone on their birth year, sex, département
/// and commune.
pub async fn pick_target(raw: &SessionContext) -> Target {
    let sql = "WITH alone AS (SELECT ben_nai_ann, ben_sex_cod, ben_res_dpt, ben_res_com FROM ir_ben_r \
               GROUP BY 1, 2, 3, 4 HAVING count(DISTINCT ben_nir_ano) = 1), \
               illness AS (SELECT ben_nir_psa, min(med_mtf_cod) AS diagnosis FROM ir_imb_r GROUP BY 1) \
               SELECT b.ben_nir_ano, b.ben_nai_ann, b.ben_sex_cod, b.ben_res_dpt, b.ben_res_com, max(p.prs_pai_mnt) AS amount, \
               d.diagnosis, count(*) AS claims \
               FROM ir_ben_r b JOIN alone a ON b.ben_nai_ann = a.ben_nai_ann AND b.ben_sex_cod = a.ben_sex_cod \
               AND b.ben_res_dpt = a.ben_res_dpt AND b.ben_res_com = a.ben_res_com \
               JOIN illness d ON d.ben_nir_psa = b.ben_nir_psa \
               JOIN er_prs_f p ON b.ben_nir_psa = p.ben_nir_psa \
               WHERE b.ben_nir_psa IN (SELECT nir_ano_17 FROM t_mco_c) \
               GROUP BY 1, 2, 3, 4, 5, 7 ORDER BY claims DESC, 1 LIMIT 1";
    let batches = run_raw(raw, sql).await;
    let batch = &batches[0];
    Target {
        person: batch.column(0).as_string::<i32>().value(0).to_string(),
        birth_year: batch.column(1).as_primitive::<Int16Type>().value(0),
        sex: batch.column(2).as_primitive::<Int8Type>().value(0),
        departement: batch.column(3).as_string::<i32>().value(0).to_string(),
        commune: batch.column(4).as_string::<i32>().value(0).to_string(),
        amount: batch.column(5).as_primitive::<Float64Type>().value(0),
        diagnosis: batch.column(6).as_string::<i32>().value(0).to_string(),
    }
}

/// Writes a copy of the data without one person's rows, in every table.
pub async fn without_person(raw: &SessionContext, person: &str, out: &Path) {
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
