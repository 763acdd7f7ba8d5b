//! Column builders for one chunk of each private table, turned into Arrow record batches.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int8Builder, Int16Builder, Int32Builder, StringBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::SynthError;
use crate::codes::departements::DEPARTEMENTS;
use crate::population::Person;
use crate::schema;

fn batch(
    table: &'static str,
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch, SynthError> {
    RecordBatch::try_new(schema, columns).map_err(|source| SynthError::Arrow { table, source })
}

/// Rows of `ir_ben_r`.
#[derive(Default)]
pub(crate) struct BeneficiaryRows {
    ben_nir_psa: StringBuilder,
    ben_rng_gem: Int16Builder,
    ben_nir_ano: StringBuilder,
    ben_nai_ann: Int16Builder,
    ben_sex_cod: Int8Builder,
    ben_res_dpt: StringBuilder,
    ben_res_com: StringBuilder,
    ben_dcd_dte: Date32Builder,
}

impl BeneficiaryRows {
    /// One row per source id of the person, with the same demographics.
    pub(crate) fn push(&mut self, person: &Person, communes: &[String]) {
        let departement = DEPARTEMENTS[person.departement].code;
        let commune = communes.get(person.commune).map_or("001", String::as_str);
        for id in person.source_ids() {
            self.ben_nir_psa.append_value(id);
            self.ben_rng_gem.append_value(person.rng_gem);
            self.ben_nir_ano.append_value(&person.ben_nir_ano);
            self.ben_nai_ann.append_value(person.birth_year);
            self.ben_sex_cod.append_value(person.sex);
            self.ben_res_dpt.append_value(departement);
            self.ben_res_com.append_value(commune);
            self.ben_dcd_dte.append_option(person.death);
        }
    }

    pub(crate) fn finish(&mut self) -> Result<RecordBatch, SynthError> {
        batch(
            "ir_ben_r",
            schema::ir_ben_r(),
            vec![
                Arc::new(self.ben_nir_psa.finish()),
                Arc::new(self.ben_rng_gem.finish()),
                Arc::new(self.ben_nir_ano.finish()),
                Arc::new(self.ben_nai_ann.finish()),
                Arc::new(self.ben_sex_cod.finish()),
                Arc::new(self.ben_res_dpt.finish()),
                Arc::new(self.ben_res_com.finish()),
                Arc::new(self.ben_dcd_dte.finish()),
            ],
        )
    }
}

/// Rows of `er_prs_f`.
#[derive(Default)]
pub(crate) struct ClaimRows {
    ben_nir_psa: StringBuilder,
    ben_rng_gem: Int16Builder,
    exe_soi_dtd: Date32Builder,
    prs_nat_ref: Int32Builder,
    pse_spe_cod: Int16Builder,
    prs_pai_mnt: Float64Builder,
    bse_rem_mnt: Float64Builder,
}

/// One outpatient claim.
pub(crate) struct Claim<'a> {
    pub(crate) source_id: &'a str,
    pub(crate) rng_gem: i16,
    pub(crate) date: i32,
    pub(crate) nature: i32,
    pub(crate) specialty: i16,
    pub(crate) paid: f64,
    pub(crate) reimbursed: f64,
}

impl ClaimRows {
    pub(crate) fn push(&mut self, claim: Claim<'_>) {
        self.ben_nir_psa.append_value(claim.source_id);
        self.ben_rng_gem.append_value(claim.rng_gem);
        self.exe_soi_dtd.append_value(claim.date);
        self.prs_nat_ref.append_value(claim.nature);
        self.pse_spe_cod.append_value(claim.specialty);
        self.prs_pai_mnt.append_value(claim.paid);
        self.bse_rem_mnt.append_value(claim.reimbursed);
    }

    pub(crate) fn finish(&mut self) -> Result<RecordBatch, SynthError> {
        batch(
            "er_prs_f",
            schema::er_prs_f(),
            vec![
                Arc::new(self.ben_nir_psa.finish()),
                Arc::new(self.ben_rng_gem.finish()),
                Arc::new(self.exe_soi_dtd.finish()),
                Arc::new(self.prs_nat_ref.finish()),
                Arc::new(self.pse_spe_cod.finish()),
                Arc::new(self.prs_pai_mnt.finish()),
                Arc::new(self.bse_rem_mnt.finish()),
            ],
        )
    }
}

/// Rows of `er_pha_f`.
#[derive(Default)]
pub(crate) struct DispensingRows {
    ben_nir_psa: StringBuilder,
    exe_soi_dtd: Date32Builder,
    pha_atc_cla: StringBuilder,
    pha_act_qsn: Int32Builder,
}

impl DispensingRows {
    pub(crate) fn push(&mut self, source_id: &str, date: i32, atc: &str, boxes: i32) {
        self.ben_nir_psa.append_value(source_id);
        self.exe_soi_dtd.append_value(date);
        self.pha_atc_cla.append_value(atc);
        self.pha_act_qsn.append_value(boxes);
    }

    pub(crate) fn finish(&mut self) -> Result<RecordBatch, SynthError> {
        batch(
            "er_pha_f",
            schema::er_pha_f(),
            vec![
                Arc::new(self.ben_nir_psa.finish()),
                Arc::new(self.exe_soi_dtd.finish()),
                Arc::new(self.pha_atc_cla.finish()),
                Arc::new(self.pha_act_qsn.finish()),
            ],
        )
    }
}

/// Rows of `ir_imb_r`.
#[derive(Default)]
pub(crate) struct AldRows {
    ben_nir_psa: StringBuilder,
    imb_ald_num: Int16Builder,
    med_mtf_cod: StringBuilder,
    imb_ald_dtd: Date32Builder,
}

impl AldRows {
    /// One row per ALD of the person, under the source id in use when it was granted.
    pub(crate) fn push(&mut self, person: &Person) {
        for ald in &person.alds {
            self.ben_nir_psa
                .append_value(person.source_id_on(ald.start));
            self.imb_ald_num.append_value(ald.number);
            self.med_mtf_cod.append_value(ald.icd10);
            self.imb_ald_dtd.append_value(ald.start);
        }
    }

    pub(crate) fn finish(&mut self) -> Result<RecordBatch, SynthError> {
        batch(
            "ir_imb_r",
            schema::ir_imb_r(),
            vec![
                Arc::new(self.ben_nir_psa.finish()),
                Arc::new(self.imb_ald_num.finish()),
                Arc::new(self.med_mtf_cod.finish()),
                Arc::new(self.imb_ald_dtd.finish()),
            ],
        )
    }
}

/// One hospital stay, written to both `t_mco_b` and `t_mco_c`.
pub(crate) struct Stay<'a> {
    pub(crate) finess: &'a str,
    pub(crate) rsa_num: &'a str,
    pub(crate) source_id: &'a str,
    pub(crate) entry: i32,
    pub(crate) diagnosis: &'a str,
    pub(crate) ghm: &'a str,
    pub(crate) length: i32,
    pub(crate) age: i16,
}

/// Rows of `t_mco_b` and `t_mco_c`, which always hold the same stays.
#[derive(Default)]
pub(crate) struct StayRows {
    b_eta_num: StringBuilder,
    b_rsa_num: StringBuilder,
    dgn_pal: StringBuilder,
    grg_ghm: StringBuilder,
    sej_nbj: Int32Builder,
    age_ann: Int16Builder,
    c_eta_num: StringBuilder,
    c_rsa_num: StringBuilder,
    nir_ano_17: StringBuilder,
    exe_soi_dtd: Date32Builder,
}

impl StayRows {
    pub(crate) fn push(&mut self, stay: Stay<'_>) {
        self.b_eta_num.append_value(stay.finess);
        self.b_rsa_num.append_value(stay.rsa_num);
        self.dgn_pal.append_value(stay.diagnosis);
        self.grg_ghm.append_value(stay.ghm);
        self.sej_nbj.append_value(stay.length);
        self.age_ann.append_value(stay.age);
        self.c_eta_num.append_value(stay.finess);
        self.c_rsa_num.append_value(stay.rsa_num);
        self.nir_ano_17.append_value(stay.source_id);
        self.exe_soi_dtd.append_value(stay.entry);
    }

    /// The `t_mco_b` and `t_mco_c` batches.
    pub(crate) fn finish(&mut self) -> Result<(RecordBatch, RecordBatch), SynthError> {
        let b = batch(
            "t_mco_b",
            schema::t_mco_b(),
            vec![
                Arc::new(self.b_eta_num.finish()),
                Arc::new(self.b_rsa_num.finish()),
                Arc::new(self.dgn_pal.finish()),
                Arc::new(self.grg_ghm.finish()),
                Arc::new(self.sej_nbj.finish()),
                Arc::new(self.age_ann.finish()),
            ],
        )?;
        let c = batch(
            "t_mco_c",
            schema::t_mco_c(),
            vec![
                Arc::new(self.c_eta_num.finish()),
                Arc::new(self.c_rsa_num.finish()),
                Arc::new(self.nir_ano_17.finish()),
                Arc::new(self.exe_soi_dtd.finish()),
            ],
        )?;
        Ok((b, c))
    }
}
