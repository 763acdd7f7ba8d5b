//! Hospital stays (`t_mco_b` and `t_mco_c`) of one person.

use rand::Rng;

use crate::calendar::WINDOW_START;
use crate::codes::FALLBACK_DIAGNOSIS;
use crate::codes::eligibility::icd10_fits;
use crate::codes::ghm::ghm;
use crate::ids::MAX_STAYS_PER_PERSON;
use crate::model::Model;
use crate::population::Person;
use crate::rows::{Stay, StayRows};
use crate::sampling::{day_between, log_normal};

/// Newborn diagnoses: a healthy birth most of the time.
const NEWBORN: &[&str] = &["P599", "P073", "P071", "P221", "P220", "P704", "P369"];
/// Obstetric stays of women of child-bearing age, with their relative weights.
const OBSTETRIC: &[(&str, f64)] = &[("O80", 0.7), ("O82", 0.2), ("O039", 0.05), ("O049", 0.05)];
/// Diagnoses the generator writes without drawing them from the Zipf list.
#[cfg(test)]
pub(crate) const FIXED_DIAGNOSES: &[&str] = &[
    "Z380", "P599", "P073", "P071", "P221", "P220", "P704", "P369", "O80", "O82", "O039", "O049",
    "Z511", "Z491",
];

/// What a stay is for, which decides its diagnosis and length.
#[derive(Clone, Copy)]
enum Purpose {
    Birth,
    /// A day-case session (chemotherapy, dialysis) with this diagnosis.
    Session(&'static str),
    Other,
}

/// Probability of at least one stay (other than one's own birth) over the window, by age: about
/// 15% of all persons once births are counted.
fn stay_probability(age: i32, female: bool) -> f64 {
    match age {
        0..=4 => 0.15,
        5..=17 => 0.035,
        18..=39 if female => 0.11,
        18..=39 => 0.05,
        40..=59 => 0.08,
        60..=74 => 0.14,
        _ => 0.22,
    }
}

/// Extra stays after the first: most patients come once.
fn extra_stays<R: Rng + ?Sized>(rng: &mut R) -> u64 {
    match rng.random::<f64>() {
        u if u < 0.62 => 0,
        u if u < 0.82 => 1,
        u if u < 0.91 => 2,
        u if u < 0.96 => 3,
        _ => rng.random_range(4..MAX_STAYS_PER_PERSON),
    }
}

/// Appends the person's hospital stays.
pub(crate) fn push_stays<R: Rng + ?Sized>(
    model: &Model,
    rng: &mut R,
    person: &Person,
    rows: &mut StayRows,
) {
    let mut stays: Vec<(i32, Purpose)> = Vec::new();
    if person.birth >= WINDOW_START {
        stays.push((person.birth, Purpose::Birth));
    }
    let mut probability = stay_probability(person.age(), person.is_female());
    if !person.alds.is_empty() {
        probability = (probability * 1.5).min(0.9);
    }
    if rng.random_bool(probability) {
        for _ in 0..=extra_stays(rng) {
            stays.push((
                day_between(rng, person.first_day, person.last_day),
                Purpose::Other,
            ));
        }
    }
    // Cancer and kidney-failure patients come back for series of day-case sessions.
    for ald in &person.alds {
        let session = match ald.number {
            30 => "Z511",
            19 if ald.icd10 == "N185" => "Z491",
            _ => continue,
        };
        if rng.random_bool(0.3) {
            let first = ald.start.max(person.first_day);
            let start = day_between(rng, first, person.last_day);
            for i in 0..rng.random_range(3..=6) {
                stays.push((
                    (start + 14 * i).min(person.last_day),
                    Purpose::Session(session),
                ));
            }
        }
    }
    stays.truncate(MAX_STAYS_PER_PERSON as usize);
    stays.sort_by_key(|(date, _)| *date);

    let home = &model.hospitals[person.departement];
    let home_hospital = home.weights.sample(rng);
    for (ordinal, (entry, purpose)) in stays.into_iter().enumerate() {
        let age = person.age_on(entry);
        let diagnosis = match purpose {
            Purpose::Birth if rng.random_bool(0.9) => "Z380",
            Purpose::Birth => NEWBORN[rng.random_range(0..NEWBORN.len())],
            Purpose::Session(code) => code,
            Purpose::Other => other_diagnosis(model, rng, person, entry, age),
        };
        let length = length_of_stay(rng, diagnosis, age)
            .min(person.last_day - entry)
            .max(0);
        let finess = if rng.random_bool(0.85) {
            &home.finess[home_hospital]
        } else {
            // Referral elsewhere, usually to a large hospital of a populous département.
            let elsewhere = &model.hospitals[model.departements.sample(rng)];
            &elsewhere.finess[elsewhere.weights.sample(rng)]
        };
        let rsa_num = model.keys.rsa_num(person.index, ordinal as u64);
        let ghm = ghm(diagnosis, length, age, rng.random());
        rows.push(Stay {
            finess,
            rsa_num: &rsa_num,
            source_id: person.source_id_on(entry),
            entry,
            diagnosis,
            ghm: &ghm,
            length,
            age: age as i16,
        });
    }
}

fn other_diagnosis<R: Rng + ?Sized>(
    model: &Model,
    rng: &mut R,
    person: &Person,
    date: i32,
    age: i32,
) -> &'static str {
    if let Some(ald) = person.alds.iter().find(|a| a.start <= date)
        && rng.random_bool(0.35)
    {
        return ald.icd10;
    }
    if person.is_female() && (18..=42).contains(&age) && rng.random_bool(0.3) {
        let mut u = rng.random::<f64>();
        for (code, weight) in OBSTETRIC {
            if u < *weight {
                return code;
            }
            u -= weight;
        }
        return "O80";
    }
    model.diagnoses.draw(
        rng,
        |code| code != "Z380" && icd10_fits(code, person.sex, age, date),
        FALLBACK_DIAGNOSIS,
    )
}

/// Length of stay in days: 0 for day cases and sessions, otherwise log-normal and longer with age.
fn length_of_stay<R: Rng + ?Sized>(rng: &mut R, diagnosis: &str, age: i32) -> i32 {
    match diagnosis {
        "Z511" | "Z510" | "Z491" => 0,
        "O80" | "Z380" => rng.random_range(2..=5),
        "O82" => rng.random_range(4..=7),
        _ => {
            let day_case = if age < 75 { 0.45 } else { 0.3 };
            if rng.random_bool(day_case) {
                0
            } else {
                let median = 2.5 + f64::from(age.max(0)) / 30.0;
                (log_normal(rng, median, 0.8).ceil() as i32).clamp(1, 120)
            }
        }
    }
}
