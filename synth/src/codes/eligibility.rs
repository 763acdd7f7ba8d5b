//! Which codes fit which patients: no delivery for a man, no prostate cancer for a woman, no
//! Alzheimer's disease at 20, no COVID-19 before 2020. The generator redraws a code that does
//! not fit, which keeps the Zipf shape among the codes that do.

use crate::calendar::days_from_civil;

/// Male, as coded in `ben_sex_cod`.
pub const MALE: i8 = 1;
/// Female, as coded in `ben_sex_cod`.
pub const FEMALE: i8 = 2;

const COVID_FROM: i32 = days_from_civil(2020, 3, 1);
const COVID_VACCINE_FROM: i32 = days_from_civil(2021, 1, 1);

/// Whether ICD-10 `code` can be a diagnosis for a person of `sex` and `age` (completed years) on `date`.
pub fn icd10_fits(code: &str, sex: i8, age: i32, date: i32) -> bool {
    let female = sex == FEMALE;
    let male = sex == MALE;
    let p2 = code.get(..2).unwrap_or(code);
    let p3 = code.get(..3).unwrap_or(code);
    match p3 {
        "U07" => date >= COVID_FROM,
        "Z38" => age == 0,
        // Chemotherapy, radiotherapy and dialysis sessions: adults (children's are too rare to model).
        "Z49" | "Z51" => age >= 18,
        "Z39" => female && (14..=50).contains(&age),
        "C61" | "N40" => male && age >= 40,
        "C62" | "N41" | "N46" | "N47" | "Q53" => male,
        "C50" | "D05" | "N61" | "N63" => female && age >= 18,
        "C53" | "C54" | "C56" | "D25" | "N76" | "N80" | "N81" | "N83" | "N92" | "N97" | "E28"
        | "B37" => female && age >= 12,
        "N95" | "M81" => female && age >= 45,
        "F00" | "F01" | "F03" | "F05" | "G30" => age >= 55,
        "H25" | "H91" | "M16" | "M17" | "I48" | "I35" | "M35" => age >= 45,
        "I20" | "I21" | "I25" | "I63" | "I64" | "I69" | "I70" | "I71" | "G20" => age >= 35,
        "J21" | "A37" | "A08" | "K56" if code == "K561" || p3 != "K56" => age <= 4,
        "R56" => age <= 6,
        "F90" | "F84" | "Q65" | "Q21" => age <= 40,
        "F10" | "F11" | "F12" | "F17" | "T51" | "K70" => age >= 15,
        _ => match p2 {
            "O0" | "O1" | "O2" | "O3" | "O4" | "O6" | "O7" | "O8" | "O9" => {
                female && (14..=50).contains(&age)
            }
            "P0" | "P1" | "P2" | "P3" | "P4" | "P5" | "P6" | "P7" | "P8" | "P9" => age == 0,
            _ => true,
        },
    }
}

/// Whether ATC `code` can be dispensed to a person of `sex` and `age` on `date`.
pub fn atc_fits(code: &str, sex: i8, age: i32, date: i32) -> bool {
    let female = sex == FEMALE;
    let male = sex == MALE;
    let p5 = code.get(..5).unwrap_or(code);
    match p5 {
        "J07BX" => date >= COVID_VACCINE_FROM,
        "G03AA" | "G03AC" | "G03AD" | "G03HA" | "G02CB" | "G01AF" => {
            female && (14..=55).contains(&age)
        }
        "G03CA" | "G03DA" => female && age >= 18,
        "L02BG" => female && age >= 25,
        "G04CA" | "G04CB" | "G04BE" | "L02BB" | "L02BX" | "L02AE" => male && age >= 40,
        "N06DA" | "N06DX" => age >= 55,
        "N06BA" => age <= 40,
        "A10BA" | "A10BB" | "A10BD" | "A10BH" | "A10BJ" | "A10BK" | "C10AA" | "C10AB" | "C10AX"
        | "C10BA" | "C09AA" | "C09BB" | "C09CA" | "C09DA" | "C09DX" | "C08CA" | "C08DA"
        | "C08DB" | "C07AB" | "C07AG" | "C03DA" | "B01AF" | "B01AC" | "B01AA" | "B01AE"
        | "C01BD" | "C01AA" | "C01DA" | "C01EB" | "M04AA" | "M05BA" | "M05BX" | "N04BA"
        | "N04BC" | "N04BD" | "G04BD" | "S01ED" | "S01EE" | "S01EC" | "S01LA" => age >= 18,
        "D10BA" | "D10AD" => (12..=40).contains(&age),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let d = days_from_civil(2021, 5, 1);
        assert!(!icd10_fits("O80", MALE, 30, d));
        assert!(icd10_fits("O80", FEMALE, 30, d));
        assert!(!icd10_fits("O80", FEMALE, 70, d));
        assert!(!icd10_fits("C61", FEMALE, 70, d));
        assert!(icd10_fits("C61", MALE, 70, d));
        assert!(!icd10_fits("U071", MALE, 70, days_from_civil(2019, 5, 1)));
        assert!(icd10_fits("P599", FEMALE, 0, d));
        assert!(!icd10_fits("P599", FEMALE, 1, d));
        assert!(icd10_fits("K566", FEMALE, 80, d));
        assert!(!icd10_fits("K561", FEMALE, 80, d));
        assert!(icd10_fits("I10", FEMALE, 80, d));
        assert!(!atc_fits("G04CA02", FEMALE, 70, d));
        assert!(atc_fits("N02BE01", FEMALE, 0, d));
    }
}
