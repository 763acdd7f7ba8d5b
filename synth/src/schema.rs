//! The Arrow schemas of the nine tables (DESIGN.md §4), in the order of [`crate::TABLES`].

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

/// Beneficiaries: one row per source id `ben_nir_psa`; `ben_nir_ano` is the person.
pub(crate) fn ir_ben_r() -> SchemaRef {
    schema(vec![
        utf8("ben_nir_psa"),
        Field::new("ben_rng_gem", DataType::Int16, false),
        utf8("ben_nir_ano"),
        Field::new("ben_nai_ann", DataType::Int16, false),
        Field::new("ben_sex_cod", DataType::Int8, false),
        utf8("ben_res_dpt"),
        utf8("ben_res_com"),
        // The only nullable column: most persons are alive.
        Field::new("ben_dcd_dte", DataType::Date32, true),
    ])
}

/// Outpatient claims.
pub(crate) fn er_prs_f() -> SchemaRef {
    schema(vec![
        utf8("ben_nir_psa"),
        Field::new("ben_rng_gem", DataType::Int16, false),
        Field::new("exe_soi_dtd", DataType::Date32, false),
        Field::new("prs_nat_ref", DataType::Int32, false),
        Field::new("pse_spe_cod", DataType::Int16, false),
        Field::new("prs_pai_mnt", DataType::Float64, false),
        Field::new("bse_rem_mnt", DataType::Float64, false),
    ])
}

/// Pharmacy dispensings.
pub(crate) fn er_pha_f() -> SchemaRef {
    schema(vec![
        utf8("ben_nir_psa"),
        Field::new("exe_soi_dtd", DataType::Date32, false),
        utf8("pha_atc_cla"),
        Field::new("pha_act_qsn", DataType::Int32, false),
    ])
}

/// Long-term illnesses (ALD).
pub(crate) fn ir_imb_r() -> SchemaRef {
    schema(vec![
        utf8("ben_nir_psa"),
        Field::new("imb_ald_num", DataType::Int16, false),
        utf8("med_mtf_cod"),
        Field::new("imb_ald_dtd", DataType::Date32, false),
    ])
}

/// Hospital stay details (PMSI MCO, one row per stay).
pub(crate) fn t_mco_b() -> SchemaRef {
    schema(vec![
        utf8("eta_num"),
        utf8("rsa_num"),
        utf8("dgn_pal"),
        utf8("grg_ghm"),
        Field::new("sej_nbj", DataType::Int32, false),
        Field::new("age_ann", DataType::Int16, false),
    ])
}

/// Hospital stays linked to the beneficiary.
pub(crate) fn t_mco_c() -> SchemaRef {
    schema(vec![
        utf8("eta_num"),
        utf8("rsa_num"),
        utf8("nir_ano_17"),
        Field::new("exe_soi_dtd", DataType::Date32, false),
    ])
}

/// A public code list with labels.
pub(crate) fn code_list() -> SchemaRef {
    schema(vec![utf8("code"), utf8("libelle")])
}

/// The département list, with regions.
pub(crate) fn ref_dpt() -> SchemaRef {
    schema(vec![utf8("code"), utf8("libelle"), utf8("region")])
}
