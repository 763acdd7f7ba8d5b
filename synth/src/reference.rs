//! The public code lists `ref_cim10`, `ref_atc` and `ref_dpt`: every code the generator can write.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::record_batch::RecordBatch;

use crate::SynthError;
use crate::codes::atc::ATC;
use crate::codes::cim10::CIM10;
use crate::codes::departements::DEPARTEMENTS;
use crate::schema;

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(values.map(Some).collect::<StringArray>())
}

fn code_list(table: &'static str, list: &[(&str, &str, u8)]) -> Result<RecordBatch, SynthError> {
    RecordBatch::try_new(
        schema::code_list(),
        vec![
            strings(list.iter().map(|(c, _, _)| *c)),
            strings(list.iter().map(|(_, l, _)| *l)),
        ],
    )
    .map_err(|source| SynthError::Arrow { table, source })
}

/// `ref_cim10`: ICD-10 codes with French labels.
pub(crate) fn ref_cim10() -> Result<RecordBatch, SynthError> {
    code_list("ref_cim10", CIM10)
}

/// `ref_atc`: ATC codes with WHO names.
pub(crate) fn ref_atc() -> Result<RecordBatch, SynthError> {
    code_list("ref_atc", ATC)
}

/// `ref_dpt`: départements with their names and regions.
pub(crate) fn ref_dpt() -> Result<RecordBatch, SynthError> {
    RecordBatch::try_new(
        schema::ref_dpt(),
        vec![
            strings(DEPARTEMENTS.iter().map(|d| d.code)),
            strings(DEPARTEMENTS.iter().map(|d| d.name)),
            strings(DEPARTEMENTS.iter().map(|d| d.region)),
        ],
    )
    .map_err(|source| SynthError::Arrow {
        table: "ref_dpt",
        source,
    })
}
