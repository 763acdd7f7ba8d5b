//! Outpatient claims (`er_prs_f`) and pharmacy dispensings (`er_pha_f`) of one person.

use rand::Rng;

use crate::codes::FALLBACK_DRUG;
use crate::codes::care::{
    CARE_NATURES, CareNature, GP_CONSULTATION, Performer, SPECIALISTS, TELECONSULTATION,
    TELECONSULTATION_FROM,
};
use crate::codes::eligibility::atc_fits;
use crate::model::Model;
use crate::population::Person;
use crate::rows::{Claim, ClaimRows, DispensingRows};
use crate::sampling::{day_between, log_normal, poisson, to_cents};

/// No single person gets more rows than this per table, whatever their frailty: it bounds the
/// memory of a chunk.
const MAX_EVENTS_PER_PERSON: u64 = 5_000;
/// Share of an ALD patient's claims that the ALD covers at 100%.
const ALD_COVERED_SHARE: f64 = 0.7;
/// Share of an ALD patient's dispensings that are drugs for that ALD.
const ALD_DRUG_SHARE: f64 = 0.4;

/// Mean outpatient claims per year of observation, before frailty: young children and the old
/// see doctors most.
fn claims_per_year(age: i32, female: bool) -> f64 {
    let base = match age {
        0..=4 => 6.0,
        5..=17 => 2.5,
        18..=39 => 2.5,
        40..=59 => 3.5,
        60..=74 => 5.5,
        _ => 8.0,
    };
    if female && (18..=49).contains(&age) {
        base + 0.7
    } else {
        base
    }
}

/// Mean dispensings per year of observation, before frailty.
fn dispensings_per_year(age: i32) -> f64 {
    match age {
        0..=4 => 2.0,
        5..=17 => 1.0,
        18..=39 => 1.2,
        40..=59 => 2.5,
        60..=74 => 5.0,
        _ => 8.0,
    }
}

/// Sorted dates of `mean`-on-average events in the person's observation window.
fn event_dates<R: Rng + ?Sized>(rng: &mut R, person: &Person, mean: f64, dates: &mut Vec<i32>) {
    let count = poisson(rng, mean).min(MAX_EVENTS_PER_PERSON);
    dates.clear();
    dates.extend((0..count).map(|_| day_between(rng, person.first_day, person.last_day)));
    dates.sort_unstable();
}

fn specialty<R: Rng + ?Sized>(model: &Model, rng: &mut R, nature: &CareNature, age: i32) -> i16 {
    match nature.performer {
        Performer::Specialist if age < 16 && rng.random_bool(0.5) => 12,
        Performer::Specialist => SPECIALISTS[model.specialists.sample(rng)],
        Performer::Only(list) if list.len() > 1 && rng.random_bool(0.15) => {
            list[rng.random_range(1..list.len())]
        }
        Performer::Only(list) => list.first().copied().unwrap_or(1),
    }
}

/// Appends the person's outpatient claims.
pub(crate) fn push_claims<R: Rng + ?Sized>(
    model: &Model,
    rng: &mut R,
    person: &Person,
    rows: &mut ClaimRows,
    dates: &mut Vec<i32>,
) {
    let age = person.age();
    let mean = claims_per_year(age, person.is_female()) * person.years_observed() * person.frailty;
    event_dates(rng, person, mean, dates);
    for &date in dates.iter() {
        let mut nature = &CARE_NATURES[model.care_natures.sample(rng)];
        if nature.code == TELECONSULTATION && date < TELECONSULTATION_FROM {
            nature = CARE_NATURES
                .iter()
                .find(|n| n.code == GP_CONSULTATION)
                .unwrap_or(nature);
        }
        let paid = to_cents(log_normal(rng, nature.median, nature.sigma));
        let rate = if person.in_ald_on(date) && rng.random_bool(ALD_COVERED_SHARE) {
            1.0
        } else {
            nature.rate
        };
        rows.push(Claim {
            source_id: person.source_id_on(date),
            rng_gem: person.rng_gem,
            date,
            nature: nature.code,
            specialty: specialty(model, rng, nature, person.age_on(date)),
            paid,
            reimbursed: to_cents(paid * rate).min(paid),
        });
    }
}

/// Number of boxes of one dispensing: one most of the time.
fn boxes<R: Rng + ?Sized>(rng: &mut R) -> i32 {
    match rng.random::<f64>() {
        u if u < 0.70 => 1,
        u if u < 0.90 => 2,
        u if u < 0.98 => 3,
        _ => rng.random_range(4..=6),
    }
}

/// Appends the person's pharmacy dispensings.
pub(crate) fn push_dispensings<R: Rng + ?Sized>(
    model: &Model,
    rng: &mut R,
    person: &Person,
    rows: &mut DispensingRows,
    dates: &mut Vec<i32>,
) {
    let mean = dispensings_per_year(person.age()) * person.years_observed() * person.frailty;
    event_dates(rng, person, mean, dates);
    for &date in dates.iter() {
        let age = person.age_on(date);
        let ald_drugs = person
            .alds
            .iter()
            .filter(|a| a.start <= date && !a.drugs.is_empty())
            .map(|a| a.drugs)
            .next();
        let atc = match ald_drugs {
            Some(drugs) if rng.random_bool(ALD_DRUG_SHARE) => {
                drugs[rng.random_range(0..drugs.len())]
            }
            _ => model.drugs.draw(
                rng,
                |code| atc_fits(code, person.sex, age, date),
                FALLBACK_DRUG,
            ),
        };
        rows.push(person.source_id_on(date), date, atc, boxes(rng));
    }
}
