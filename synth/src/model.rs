//! The fixed distributions the generator samples from, built once per run from the code lists.
//! Nothing here depends on the seed except the identifier keys.

use crate::codes::ZipfCodes;
use crate::codes::ald::ALDS;
use crate::codes::atc::ATC;
use crate::codes::care::{CARE_NATURES, SPECIALISTS};
use crate::codes::cim10::CIM10;
use crate::codes::departements::DEPARTEMENTS;
use crate::ids::IdKeys;
use crate::sampling::Weighted;

/// Population of France on 1 January 2023 by five-year age band (thousands, INSEE, rounded);
/// the last band is 100 to 103, the oldest age generated.
const AGE_BANDS_K: [f64; 21] = [
    3_500.0, 3_900.0, 4_200.0, 4_200.0, 3_900.0, 3_700.0, 4_000.0, 4_200.0, 4_200.0, 4_300.0,
    4_500.0, 4_400.0, 4_200.0, 3_900.0, 3_700.0, 2_700.0, 2_000.0, 1_400.0, 700.0, 200.0, 30.0,
];
/// Oldest age (in the reference year) of a generated person.
pub(crate) const MAX_AGE: usize = 103;

/// Zipf exponent of commune sizes inside a département (city sizes follow Zipf's law closely).
const COMMUNE_EXPONENT: f64 = 1.0;
/// Zipf exponent of diagnoses and drugs over their commonness rank.
const CODE_EXPONENT: f64 = 0.9;

/// The communes of one département, drawn by Zipf weight on their size rank.
#[derive(Debug)]
pub(crate) struct Communes {
    pub(crate) weights: Weighted,
    /// `ben_res_com` of each size rank.
    pub(crate) codes: Vec<String>,
}

/// The hospitals (FINESS numbers) of one département, largest first.
#[derive(Debug)]
pub(crate) struct Hospitals {
    pub(crate) weights: Weighted,
    pub(crate) finess: Vec<String>,
}

/// Everything the per-chunk generators share, read-only.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) keys: IdKeys,
    pub(crate) ages: Weighted,
    pub(crate) departements: Weighted,
    pub(crate) communes: Vec<Communes>,
    pub(crate) hospitals: Vec<Hospitals>,
    pub(crate) diagnoses: ZipfCodes,
    pub(crate) drugs: ZipfCodes,
    pub(crate) care_natures: Weighted,
    pub(crate) specialists: Weighted,
    pub(crate) alds: Weighted,
}

impl Model {
    pub(crate) fn new(seed: u64) -> Self {
        let ages = Weighted::new((0..=MAX_AGE).map(|age| AGE_BANDS_K[age / 5] / 5.0));
        let departements = Weighted::new(DEPARTEMENTS.iter().map(|d| f64::from(d.population_k)));
        let communes = DEPARTEMENTS
            .iter()
            .map(|d| {
                let n = usize::from(d.communes);
                Communes {
                    weights: Weighted::zipf(n, COMMUNE_EXPONENT),
                    codes: commune_codes(d.code, n),
                }
            })
            .collect();
        let hospitals = DEPARTEMENTS
            .iter()
            .map(|d| {
                // One hospital per 150,000 inhabitants or so, at least two.
                let n = (d.population_k / 150).clamp(1, 14) as usize + 1;
                Hospitals {
                    weights: Weighted::zipf(n, 1.0),
                    finess: finess_numbers(d.code, n),
                }
            })
            .collect();
        Model {
            keys: IdKeys::new(seed),
            ages,
            departements,
            communes,
            hospitals,
            diagnoses: ZipfCodes::new(CIM10, CODE_EXPONENT),
            drugs: ZipfCodes::new(ATC, CODE_EXPONENT),
            care_natures: Weighted::new(CARE_NATURES.iter().map(|n| n.weight)),
            specialists: Weighted::zipf(SPECIALISTS.len(), 1.0),
            alds: Weighted::new(ALDS.iter().map(|a| a.weight)),
        }
    }
}

/// Commune codes of a département by size rank. Ranks are spread over `001..=n` by a fixed
/// stride coprime with `n`, so that the largest commune is not always `001` (INSEE codes are
/// alphabetical, not by size). Paris uses its arrondissements, `101` to `120`.
fn commune_codes(departement: &str, n: usize) -> Vec<String> {
    if departement == "075" {
        return (0..n).map(|rank| format!("{}", 101 + rank)).collect();
    }
    let stride = [37, 41, 43, 47, 53]
        .into_iter()
        .find(|s| !n.is_multiple_of(*s))
        .unwrap_or(1);
    (0..n)
        .map(|rank| format!("{:03}", (rank * stride + 13) % n + 1))
        .collect()
}

/// Nine-character FINESS numbers: the département prefix (two characters in mainland France,
/// three overseas) followed by digits.
fn finess_numbers(departement: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match departement.strip_prefix('0') {
            Some(two) => format!("{two}{:07}", 1_000_017 + i * 48_271),
            None => format!("{departement}{:06}", 100_017 + i * 4_271),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn communes_and_hospitals_are_unique_and_well_formed() {
        let model = Model::new(0);
        let mut finess = HashSet::new();
        for (d, dep) in DEPARTEMENTS.iter().enumerate() {
            let codes: HashSet<_> = model.communes[d].codes.iter().collect();
            assert_eq!(codes.len(), usize::from(dep.communes), "{}", dep.code);
            assert!(codes.iter().all(|c| c.len() == 3));
            for f in &model.hospitals[d].finess {
                assert_eq!(f.len(), 9, "{f}");
                assert!(finess.insert(f.clone()));
            }
        }
    }
}
