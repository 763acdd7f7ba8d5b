//! Persons: demographics, source ids, deaths and long-term illnesses.

use rand::Rng;

use crate::calendar::{REFERENCE_YEAR, WINDOW_END, WINDOW_START, age_on, days_from_civil};
use crate::codes::ald::ALDS;
use crate::codes::eligibility::{FEMALE, MALE, icd10_fits};
use crate::model::Model;
use crate::sampling::{day_between, log_normal};

/// Share of persons with a second `ben_nir_psa` (a change of insurance number).
const SECOND_SOURCE_ID: f64 = 0.05;

/// One long-term illness of a person.
#[derive(Debug, Clone)]
pub(crate) struct PersonAld {
    pub(crate) number: i16,
    pub(crate) icd10: &'static str,
    pub(crate) start: i32,
    pub(crate) drugs: &'static [&'static str],
}

/// One generated person and what drives their care.
#[derive(Debug)]
pub(crate) struct Person {
    /// Global index of the person across the run: the counter behind every identifier.
    pub(crate) index: u64,
    pub(crate) ben_nir_ano: String,
    /// The first `ben_nir_psa`.
    pub(crate) first_id: String,
    /// A second `ben_nir_psa` and the day it replaced the first (a change of insurance number).
    pub(crate) second_id: Option<(String, i32)>,
    pub(crate) rng_gem: i16,
    pub(crate) birth: i32,
    pub(crate) birth_year: i16,
    pub(crate) sex: i8,
    pub(crate) departement: usize,
    pub(crate) commune: usize,
    pub(crate) death: Option<i32>,
    /// First and last day the person can receive care (birth and death clip the window).
    pub(crate) first_day: i32,
    pub(crate) last_day: i32,
    /// Multiplies every care rate: most persons use little care, a few a lot.
    pub(crate) frailty: f64,
    pub(crate) alds: Vec<PersonAld>,
}

impl Person {
    /// The source id in use on `date`.
    pub(crate) fn source_id_on(&self, date: i32) -> &str {
        match &self.second_id {
            Some((second, from)) if date >= *from => second,
            _ => &self.first_id,
        }
    }

    /// Every source id of the person, one `ir_ben_r` row each.
    pub(crate) fn source_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first_id.as_str())
            .chain(self.second_id.as_ref().map(|(id, _)| id.as_str()))
    }

    pub(crate) fn age_on(&self, date: i32) -> i32 {
        age_on(self.birth, date).max(0)
    }

    /// Age in the reference year, which sets the rates of care.
    pub(crate) fn age(&self) -> i32 {
        REFERENCE_YEAR - i32::from(self.birth_year)
    }

    /// Years (fractional) the person is observed.
    pub(crate) fn years_observed(&self) -> f64 {
        f64::from(self.last_day - self.first_day + 1) / 365.25
    }

    /// Whether one of the person's ALDs covers `date`.
    pub(crate) fn in_ald_on(&self, date: i32) -> bool {
        self.alds.iter().any(|a| a.start <= date)
    }

    pub(crate) fn is_female(&self) -> bool {
        self.sex == FEMALE
    }
}

/// Probability of dying in the observation window, by age (about 1% overall).
fn death_probability(age: i32) -> f64 {
    match age {
        0 => 0.003,
        1..=39 => 0.0005,
        40..=59 => 0.003,
        60..=69 => 0.008,
        70..=79 => 0.02,
        80..=89 => 0.06,
        _ => 0.15,
    }
}

/// Probability of having at least one ALD, by age (about 11% overall).
fn ald_probability(age: i32) -> f64 {
    match age {
        0..=19 => 0.02,
        20..=39 => 0.04,
        40..=59 => 0.10,
        60..=74 => 0.22,
        _ => 0.35,
    }
}

/// Men are a little more numerous among the young, women clearly so among the old.
fn male_probability(age: i32) -> f64 {
    match age {
        0..=49 => 0.51,
        50..=69 => 0.485,
        70..=79 => 0.45,
        80..=89 => 0.38,
        _ => 0.27,
    }
}

/// Draws the person with global index `index`.
pub(crate) fn draw_person<R: Rng + ?Sized>(model: &Model, rng: &mut R, index: u64) -> Person {
    let age = model.ages.sample(rng) as i32;
    let birth_year = REFERENCE_YEAR - age;
    let birth = day_between(
        rng,
        days_from_civil(birth_year, 1, 1),
        days_from_civil(birth_year, 12, 31),
    );
    let sex = if rng.random_bool(male_probability(age)) {
        MALE
    } else {
        FEMALE
    };
    let departement = model.departements.sample(rng);
    let commune = model.communes[departement].weights.sample(rng);
    let first_day = birth.max(WINDOW_START);
    let death = rng
        .random_bool(death_probability(age))
        .then(|| day_between(rng, (first_day + 1).min(WINDOW_END), WINDOW_END));
    let last_day = death.unwrap_or(WINDOW_END);

    let rng_gem = if age < 20 && rng.random_bool(0.01) {
        2
    } else {
        1
    };
    let second_id = rng.random_bool(SECOND_SOURCE_ID).then(|| {
        (
            model.keys.ben_nir_psa(index, 1),
            day_between(rng, first_day + 1, last_day),
        )
    });

    let mut person = Person {
        index,
        ben_nir_ano: model.keys.ben_nir_ano(index),
        first_id: model.keys.ben_nir_psa(index, 0),
        second_id,
        rng_gem,
        birth,
        birth_year: birth_year as i16,
        sex,
        departement,
        commune,
        death,
        first_day,
        last_day,
        frailty: log_normal(rng, (-0.5f64).exp(), 1.0),
        alds: Vec::new(),
    };
    if rng.random_bool(ald_probability(age)) {
        let count = if rng.random_bool(0.15) { 2 } else { 1 };
        for _ in 0..count {
            if let Some(ald) = draw_ald(model, rng, &person)
                && person.alds.iter().all(|a| a.number != ald.number)
            {
                person.alds.push(ald);
            }
        }
    }
    if !person.alds.is_empty() {
        person.frailty *= 2.0;
    }
    if person.death.is_some() {
        person.frailty *= 1.5;
    }
    person
}

/// An ALD whose ICD-10 code fits the person; `None` if several draws found none.
fn draw_ald<R: Rng + ?Sized>(model: &Model, rng: &mut R, person: &Person) -> Option<PersonAld> {
    for _ in 0..8 {
        let ald = &ALDS[model.alds.sample(rng)];
        let icd10 = ald.icd10[rng.random_range(0..ald.icd10.len())];
        // Most ALDs began before the window; recognition dates go back to 2000.
        let start = day_between(
            rng,
            person.birth.max(days_from_civil(2000, 1, 1)),
            person.last_day,
        );
        if icd10_fits(icd10, person.sex, person.age_on(start), start) {
            return Some(PersonAld {
                number: ald.number,
                icd10,
                start,
                drugs: ald.drugs,
            });
        }
    }
    None
}
