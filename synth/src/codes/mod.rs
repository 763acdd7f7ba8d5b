//! Real public code lists (ICD-10, ATC, départements) and the SNDS nomenclatures the generator
//! draws from. Everything here is fixed data, independent of the seed.

pub mod ald;
pub mod atc;
pub mod care;
pub mod cim10;
pub mod departements;
pub mod eligibility;
pub mod ghm;

use rand::Rng;

use crate::sampling::Weighted;

/// The diagnosis used when no drawn code fits a patient ("Malaise et fatigue" fits everyone).
pub(crate) const FALLBACK_DIAGNOSIS: &str = "R53";
/// The drug used when no drawn code fits a patient (paracetamol).
pub(crate) const FALLBACK_DRUG: &str = "N02BE01";

/// A code list drawn with Zipf weights on the commonness rank given by each code's tier.
#[derive(Debug, Clone)]
pub(crate) struct ZipfCodes {
    /// Codes sorted from most to least common.
    by_rank: Vec<&'static str>,
    weights: Weighted,
}

impl ZipfCodes {
    pub(crate) fn new(list: &'static [(&'static str, &'static str, u8)], exponent: f64) -> Self {
        let mut ranked: Vec<(u8, usize, &'static str)> = list
            .iter()
            .enumerate()
            .map(|(i, (code, _, tier))| (*tier, i, *code))
            .collect();
        // Stable order inside a tier (list order), so that the ranking never depends on sorting details.
        ranked.sort_by_key(|(tier, i, _)| (*tier, *i));
        ZipfCodes {
            by_rank: ranked.into_iter().map(|(_, _, code)| code).collect(),
            weights: Weighted::zipf(list.len(), exponent),
        }
    }

    /// Draws a code that `fits`, redrawing a few times; falls back to `fallback` if none did.
    pub(crate) fn draw<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        fits: impl Fn(&str) -> bool,
        fallback: &'static str,
    ) -> &'static str {
        for _ in 0..24 {
            let code = self.by_rank[self.weights.sample(rng)];
            if fits(code) {
                return code;
            }
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn codes(list: &[(&'static str, &'static str, u8)]) -> HashSet<&'static str> {
        list.iter().map(|(c, _, _)| *c).collect()
    }

    #[test]
    fn lists_are_large_unique_and_well_formed() {
        let cim = codes(cim10::CIM10);
        assert_eq!(cim.len(), cim10::CIM10.len(), "duplicate ICD-10 code");
        assert!(cim.len() >= 300, "only {} ICD-10 codes", cim.len());
        for (code, label, tier) in cim10::CIM10 {
            assert!((3..=4).contains(&code.len()), "{code}");
            assert!(code.as_bytes()[0].is_ascii_uppercase());
            assert!(code[1..].bytes().all(|b| b.is_ascii_digit()), "{code}");
            assert!(!label.is_empty() && (1..=5).contains(tier));
        }
        let atc = codes(atc::ATC);
        assert_eq!(atc.len(), atc::ATC.len(), "duplicate ATC code");
        assert!(atc.len() >= 200, "only {} ATC codes", atc.len());
        for (code, label, tier) in atc::ATC {
            let b = code.as_bytes();
            assert_eq!(b.len(), 7, "{code}");
            assert!(
                b[0].is_ascii_uppercase() && b[3].is_ascii_uppercase() && b[4].is_ascii_uppercase()
            );
            assert!(
                b[1..3].iter().chain(&b[5..7]).all(u8::is_ascii_digit),
                "{code}"
            );
            assert!(!label.is_empty() && (1..=5).contains(tier));
        }
        let dpt: HashSet<_> = departements::DEPARTEMENTS.iter().map(|d| d.code).collect();
        assert_eq!(dpt.len(), 101);
        assert!(
            departements::DEPARTEMENTS
                .iter()
                .all(|d| d.code.len() == 3 && d.communes > 0)
        );
    }

    #[test]
    fn fixed_codes_are_in_the_reference_lists() {
        let cim = codes(cim10::CIM10);
        let atc = codes(atc::ATC);
        assert!(cim.contains(FALLBACK_DIAGNOSIS));
        assert!(atc.contains(FALLBACK_DRUG));
        for code in crate::hospital::FIXED_DIAGNOSES {
            assert!(cim.contains(code), "{code}");
        }
        for ald in ald::ALDS {
            assert!((1..=32).contains(&ald.number));
            assert!(!ald.icd10.is_empty());
            for code in ald.icd10 {
                assert!(
                    cim.contains(code),
                    "ALD {} uses unknown ICD-10 {code}",
                    ald.number
                );
            }
            for code in ald.drugs {
                assert!(
                    atc.contains(code),
                    "ALD {} uses unknown ATC {code}",
                    ald.number
                );
            }
        }
    }
}
