//! Dates as Arrow `Date32` values (days since 1970-01-01) and the observation window.

/// First day of care in the data: 2019-01-01.
pub(crate) const WINDOW_START: i32 = days_from_civil(2019, 1, 1);
/// Last day of care in the data: 2023-12-31.
pub(crate) const WINDOW_END: i32 = days_from_civil(2023, 12, 31);
/// The year ages are reckoned against when drawing the population (its last year of data).
pub(crate) const REFERENCE_YEAR: i32 = 2023;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) const fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `(year, month, day)` of a day number; the inverse of [`days_from_civil`].
pub(crate) const fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + (if month <= 2 { 1 } else { 0 });
    (year, month, day)
}

/// Completed years of age on `date` for a person born on `birth`.
pub(crate) fn age_on(birth: i32, date: i32) -> i32 {
    let (by, bm, bd) = civil_from_days(birth);
    let (y, m, d) = civil_from_days(date);
    let had_birthday = (m, d) >= (bm, bd);
    y - by - (if had_birthday { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(WINDOW_START, 17_897);
        assert_eq!(WINDOW_END, 19_722);
        assert_eq!(civil_from_days(19_722), (2023, 12, 31));
        assert_eq!(civil_from_days(days_from_civil(1920, 2, 29)), (1920, 2, 29));
        for d in -40_000..30_000 {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn ages() {
        let birth = days_from_civil(1950, 6, 15);
        assert_eq!(age_on(birth, days_from_civil(2020, 6, 14)), 69);
        assert_eq!(age_on(birth, days_from_civil(2020, 6, 15)), 70);
        assert_eq!(age_on(birth, birth), 0);
    }
}
