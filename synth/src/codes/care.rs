//! Outpatient care natures (`prs_nat_ref`) and practitioner specialties (`pse_spe_cod`).
//!
//! The codes are modelled on the SNDS `PRS_NAT_REF` and `PSE_SPE_COD` nomenclatures; the labels
//! in the comments are documentation only (no reference table carries them), and the amounts and
//! reimbursement rates are typical orders of magnitude, not tariffs.

/// Specialties of medical specialists, most frequently seen first (drawn with Zipf weights):
/// ophthalmology, gynaecology, dermatology, cardiology, paediatrics, ENT, rheumatology,
/// psychiatry, gastro-enterology, pneumology, radiology, neurology, orthopaedic surgery,
/// endocrinology, urology, nephrology, internal medicine, general surgery, anaesthesia,
/// stomatology, geriatrics, medical gynaecology, medical oncology, haematology, neurosurgery,
/// rehabilitation, paediatric, maxillo-facial, plastic, thoracic, vascular and visceral surgery,
/// nuclear medicine, radiotherapy, child psychiatry, obstetrics, medical genetics,
/// gynaecology-obstetrics, pathology, intensive care, neuropsychiatry, public health.
pub const SPECIALISTS: &[i16] = &[
    15, 7, 5, 3, 12, 11, 14, 33, 8, 13, 6, 32, 41, 42, 16, 35, 9, 4, 2, 18, 34, 70, 73, 71, 10, 31,
    43, 44, 46, 47, 48, 49, 72, 74, 75, 77, 78, 79, 37, 20, 17, 80,
];

/// Who performs a care nature.
#[derive(Debug, Clone, Copy)]
pub enum Performer {
    /// One of [`SPECIALISTS`].
    Specialist,
    /// These specialties, the first most often.
    Only(&'static [i16]),
}

/// One care nature and how its amounts are drawn.
#[derive(Debug, Clone, Copy)]
pub struct CareNature {
    /// `prs_nat_ref`.
    pub code: i32,
    /// Relative frequency among claims.
    pub weight: f64,
    /// Median amount paid, in euros.
    pub median: f64,
    /// Standard deviation of the logarithm of the amount.
    pub sigma: f64,
    /// Share reimbursed outside a long-term illness.
    pub rate: f64,
    /// Who performs it.
    pub performer: Performer,
}

const GP: &[i16] = &[1, 22, 23];
const NURSE: &[i16] = &[24];
const PHYSIO: &[i16] = &[26];
const DENTIST: &[i16] = &[19, 36, 53];
const LAB: &[i16] = &[38, 39, 30];
const PHARMACIST: &[i16] = &[50];
const RADIOLOGY: &[i16] = &[6, 7, 3];
const SURGERY: &[i16] = &[41, 4, 16, 49, 15, 46, 48, 47, 10, 43];

const fn nature(
    code: i32,
    weight: f64,
    median: f64,
    sigma: f64,
    rate: f64,
    performer: Performer,
) -> CareNature {
    CareNature {
        code,
        weight,
        median,
        sigma,
        rate,
        performer,
    }
}

/// Teleconsultations exist in the data only from this day on (2020-03-15, first lockdown).
pub const TELECONSULTATION_FROM: i32 = crate::calendar::days_from_civil(2020, 3, 15);
/// The `prs_nat_ref` of a teleconsultation.
pub const TELECONSULTATION: i32 = 1164;
/// The nature a teleconsultation falls back to before [`TELECONSULTATION_FROM`].
pub const GP_CONSULTATION: i32 = 1111;

/// The care natures, with skewed frequencies (GP consultations and pharmacy dominate).
pub const CARE_NATURES: &[CareNature] = &[
    // consultation, general practitioner
    nature(1111, 30.0, 25.0, 0.06, 0.7, Performer::Only(GP)),
    // consultation, specialist
    nature(1112, 8.0, 50.0, 0.35, 0.7, Performer::Specialist),
    // consultation, neuropsychiatrist
    nature(1113, 1.0, 47.0, 0.2, 0.7, Performer::Only(&[33, 17, 75])),
    // consultation, cardiologist
    nature(1114, 0.8, 49.0, 0.2, 0.7, Performer::Only(&[3])),
    // consultant's one-off opinion
    nature(1115, 0.6, 56.0, 0.15, 0.7, Performer::Specialist),
    // teleconsultation
    nature(1164, 1.5, 25.0, 0.06, 0.7, Performer::Only(GP)),
    // home visit, general practitioner
    nature(1211, 2.0, 35.0, 0.15, 0.7, Performer::Only(GP)),
    // home visit, specialist
    nature(1212, 0.2, 60.0, 0.3, 0.7, Performer::Specialist),
    // technical medical act
    nature(1311, 4.0, 70.0, 0.9, 0.7, Performer::Specialist),
    // imaging act
    nature(1321, 3.0, 55.0, 0.6, 0.7, Performer::Only(RADIOLOGY)),
    // ultrasound
    nature(1322, 1.5, 60.0, 0.4, 0.7, Performer::Only(RADIOLOGY)),
    // CT scan
    nature(1323, 0.8, 100.0, 0.4, 0.7, Performer::Only(&[6])),
    // MRI
    nature(1324, 0.6, 120.0, 0.4, 0.7, Performer::Only(&[6])),
    // surgical act
    nature(1331, 0.6, 150.0, 1.0, 0.7, Performer::Only(SURGERY)),
    // anaesthesia act
    nature(1351, 0.4, 120.0, 0.6, 0.7, Performer::Only(&[2])),
    // dental care
    nature(1411, 3.0, 40.0, 0.5, 0.7, Performer::Only(DENTIST)),
    // dental prosthesis
    nature(1421, 0.6, 500.0, 0.7, 0.7, Performer::Only(DENTIST)),
    // orthodontics
    nature(1431, 0.4, 200.0, 0.4, 0.7, Performer::Only(&[36, 19])),
    // midwife act
    nature(1511, 0.5, 25.0, 0.3, 0.7, Performer::Only(&[21])),
    // nursing act
    nature(3111, 8.0, 12.0, 0.5, 0.6, Performer::Only(NURSE)),
    // nursing care
    nature(3112, 3.0, 20.0, 0.5, 0.6, Performer::Only(NURSE)),
    // physiotherapy
    nature(3121, 5.0, 18.0, 0.3, 0.6, Performer::Only(PHYSIO)),
    // speech therapy
    nature(3131, 0.8, 30.0, 0.3, 0.6, Performer::Only(&[28])),
    // orthoptics
    nature(3141, 0.3, 25.0, 0.3, 0.6, Performer::Only(&[29])),
    // podiatry
    nature(3151, 0.2, 30.0, 0.2, 0.6, Performer::Only(&[27])),
    // laboratory tests
    nature(3211, 8.0, 25.0, 0.8, 0.6, Performer::Only(LAB)),
    // pharmacy, reimbursed at 65%
    nature(3311, 12.0, 20.0, 1.1, 0.65, Performer::Only(PHARMACIST)),
    // pharmacy, reimbursed at 30%
    nature(3312, 3.0, 8.0, 0.8, 0.3, Performer::Only(PHARMACIST)),
    // pharmacy, reimbursed at 100%
    nature(3313, 1.5, 60.0, 1.3, 1.0, Performer::Only(PHARMACIST)),
    // pharmacy, reimbursed at 15%
    nature(3315, 1.0, 6.0, 0.6, 0.15, Performer::Only(PHARMACIST)),
    // pharmacist dispensing fee
    nature(3317, 6.0, 1.02, 0.02, 0.7, Performer::Only(PHARMACIST)),
    // medical devices (LPP)
    nature(3321, 2.0, 40.0, 1.2, 0.6, Performer::Only(PHARMACIST)),
];
