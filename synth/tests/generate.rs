//! End-to-end checks of the generator: reproducibility, schemas, referential integrity and the
//! realism a disclosure-control engine needs (small cells next to large ones).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Date32Type, Int8Type, Int16Type, Int32Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use seuil_synth::{GenConfig, GenSummary, SynthError, TABLES, generate, table_schemas};
use sha2::{Digest, Sha256};

fn run(persons: u64, seed: u64, dir: &Path) -> GenSummary {
    let config = GenConfig {
        persons,
        seed,
        out_dir: dir.to_path_buf(),
    };
    match generate(&config, &|_| {}) {
        Ok(summary) => summary,
        Err(e) => panic!("generation failed: {e}"),
    }
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}

fn read(dir: &Path, table: &str) -> Vec<RecordBatch> {
    let file = File::open(dir.join(format!("{table}.parquet"))).expect("open table");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet footer")
        .build()
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

/// A whole table, column by column.
struct Table(Vec<RecordBatch>);

impl Table {
    fn load(dir: &Path, table: &str) -> Self {
        Table(read(dir, table))
    }

    fn rows(&self) -> usize {
        self.0.iter().map(RecordBatch::num_rows).sum()
    }

    fn strings(&self, column: &str) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(column).expect("column").as_string::<i32>();
                a.iter()
                    .map(|v| v.expect("non-null").to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn i16s(&self, column: &str) -> Vec<i16> {
        self.0
            .iter()
            .flat_map(|b| {
                b.column_by_name(column)
                    .expect("column")
                    .as_primitive::<Int16Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn i8s(&self, column: &str) -> Vec<i8> {
        self.0
            .iter()
            .flat_map(|b| {
                b.column_by_name(column)
                    .expect("column")
                    .as_primitive::<Int8Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn i32s(&self, column: &str) -> Vec<i32> {
        self.0
            .iter()
            .flat_map(|b| {
                b.column_by_name(column)
                    .expect("column")
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn dates(&self, column: &str) -> Vec<Option<i32>> {
        self.0
            .iter()
            .flat_map(|b| {
                let a = b
                    .column_by_name(column)
                    .expect("column")
                    .as_primitive::<Date32Type>();
                a.iter().collect::<Vec<_>>()
            })
            .collect()
    }

    fn f64s(&self, column: &str) -> Vec<f64> {
        self.0
            .iter()
            .flat_map(|b| {
                b.column_by_name(column)
                    .expect("column")
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }
}

/// Calendar year of a `Date32` day number (Howard Hinnant's civil-from-days).
fn year_of(days: i32) -> i32 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    yoe + era * 400 + i32::from(mp >= 10)
}

const WINDOW_START: i32 = 17_897; // 2019-01-01
const WINDOW_END: i32 = 19_722; // 2023-12-31

#[test]
fn year_of_known_days() {
    assert_eq!(year_of(WINDOW_START), 2019);
    assert_eq!(year_of(WINDOW_START - 1), 2018);
    assert_eq!(year_of(WINDOW_END), 2023);
    assert_eq!(year_of(WINDOW_END + 1), 2024);
    assert_eq!(year_of(0), 1970);
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // Spans several chunks, and a last partial one.
    let first = run(9_000, 7, a.path());
    let second = run(9_000, 7, b.path());
    let other = run(9_000, 8, c.path());
    for ((x, y), z) in first.tables.iter().zip(&second.tables).zip(&other.tables) {
        assert_eq!(x.rows, y.rows, "{}", x.name);
        assert_eq!(
            sha256(&x.path),
            sha256(&y.path),
            "{} differs between identical runs",
            x.name
        );
        if !x.name.starts_with("ref_") {
            assert_ne!(
                sha256(&x.path),
                sha256(&z.path),
                "{} ignores the seed",
                x.name
            );
        }
    }
}

#[test]
fn every_file_has_its_declared_schema() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(2_000, 1, dir.path());
    let names: Vec<_> = summary.tables.iter().map(|t| t.name).collect();
    assert_eq!(names, TABLES);
    let schemas = table_schemas();
    assert_eq!(schemas.len(), 9);
    for ((name, schema), table) in schemas.iter().zip(&summary.tables) {
        assert_eq!(*name, table.name);
        assert_eq!(table.path, dir.path().join(format!("{name}.parquet")));
        let file = File::open(&table.path).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(builder.schema().fields(), schema.fields(), "{name}");
        assert!(table.rows > 0, "{name} is empty");
        assert_eq!(
            Table::load(dir.path(), name).rows() as u64,
            table.rows,
            "{name}"
        );
    }
    // Nothing but the nine tables is left in the directory.
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected: Vec<_> = TABLES.iter().map(|t| format!("{t}.parquet")).collect();
    expected.sort();
    assert_eq!(files, expected);
}

#[test]
fn zero_persons_gives_empty_private_tables() {
    let dir = tempfile::tempdir().unwrap();
    let calls = std::sync::atomic::AtomicU64::new(0);
    let config = GenConfig {
        persons: 0,
        seed: 3,
        out_dir: dir.path().join("new/nested"),
    };
    let summary = generate(&config, &|_| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    for table in &summary.tables {
        let expected_empty = !table.name.starts_with("ref_");
        assert_eq!(table.rows == 0, expected_empty, "{}", table.name);
        assert_eq!(
            Table::load(&config.out_dir, table.name).rows() as u64,
            table.rows
        );
    }
    assert_eq!(calls.into_inner(), 0);
}

#[test]
fn out_dir_that_is_a_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not_a_dir");
    std::fs::write(&file, b"x").unwrap();
    let config = GenConfig {
        persons: 10,
        seed: 1,
        out_dir: file.clone(),
    };
    match generate(&config, &|_| {}) {
        Err(SynthError::CreateDir { path, .. }) => assert_eq!(path, file),
        other => panic!("expected CreateDir error, got {other:?}"),
    }
    let config = GenConfig {
        persons: 10,
        seed: 1,
        out_dir: file.join("below"),
    };
    let error = generate(&config, &|_| {}).unwrap_err();
    assert!(error.to_string().contains("below"), "{error}");
}

#[test]
fn progress_is_reported_after_each_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let config = GenConfig {
        persons: 10_000,
        seed: 5,
        out_dir: dir.path().to_path_buf(),
    };
    generate(&config, &|n| seen.lock().unwrap().push(n)).unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&10_000));
}

/// One run of 20,000 persons, checked from every angle.
#[test]
fn twenty_thousand_persons_are_consistent_and_realistic() {
    let dir = tempfile::tempdir().unwrap();
    let persons = 20_000u64;
    run(persons, 2024, dir.path());
    let d = dir.path();
    let ben = Table::load(d, "ir_ben_r");
    let prs = Table::load(d, "er_prs_f");
    let pha = Table::load(d, "er_pha_f");
    let imb = Table::load(d, "ir_imb_r");
    let mco_b = Table::load(d, "t_mco_b");
    let mco_c = Table::load(d, "t_mco_c");
    let cim10: HashSet<String> = Table::load(d, "ref_cim10")
        .strings("code")
        .into_iter()
        .collect();
    let atc: HashSet<String> = Table::load(d, "ref_atc")
        .strings("code")
        .into_iter()
        .collect();
    let dpt: HashSet<String> = Table::load(d, "ref_dpt")
        .strings("code")
        .into_iter()
        .collect();
    assert!(cim10.len() >= 300 && atc.len() >= 200 && dpt.len() == 101);
    for code in [
        "075", "02A", "02B", "971", "972", "973", "974", "976", "048", "023",
    ] {
        assert!(dpt.contains(code), "{code}");
    }

    // ir_ben_r: unique source ids, persons, ids of distinct shapes.
    let psa = ben.strings("ben_nir_psa");
    let ano = ben.strings("ben_nir_ano");
    let psa_set: HashSet<&String> = psa.iter().collect();
    assert_eq!(psa_set.len(), psa.len(), "ben_nir_psa not unique");
    let mut ids_per_person: HashMap<&String, usize> = HashMap::new();
    for a in &ano {
        *ids_per_person.entry(a).or_default() += 1;
    }
    assert_eq!(ids_per_person.len() as u64, persons);
    assert!(psa.iter().all(|p| p.len() == 17) && ano.iter().all(|a| a.len() == 32));
    assert!(ano.iter().all(|a| !psa_set.contains(a)));
    let two = ids_per_person.values().filter(|&&n| n == 2).count() as f64 / persons as f64;
    assert!(ids_per_person.values().all(|&n| n <= 2));
    assert!(
        (0.03..=0.07).contains(&two),
        "share with two source ids: {two}"
    );

    // Same demographics on both rows of a person.
    let birth = ben.i16s("ben_nai_ann");
    let sex = ben.i8s("ben_sex_cod");
    let res_dpt = ben.strings("ben_res_dpt");
    let res_com = ben.strings("ben_res_com");
    let death = ben.dates("ben_dcd_dte");
    let mut demographics: HashMap<&String, (i16, i8, &String, &String, Option<i32>)> =
        HashMap::new();
    for i in 0..psa.len() {
        let row = (birth[i], sex[i], &res_dpt[i], &res_com[i], death[i]);
        assert_eq!(
            *demographics.entry(&ano[i]).or_insert(row),
            row,
            "demographics differ"
        );
    }
    assert!(
        res_dpt.iter().all(|c| dpt.contains(c)),
        "unknown département"
    );
    assert!(res_com.iter().all(|c| c.len() == 3));
    assert!(birth.iter().all(|y| (1920..=2024).contains(y)));
    assert!(sex.iter().all(|s| *s == 1 || *s == 2));
    let males = demographics.values().filter(|d| d.1 == 1).count() as f64 / persons as f64;
    assert!((0.46..=0.52).contains(&males), "male share {males}");
    let old = demographics.values().filter(|d| d.0 <= 1933).count();
    let young = demographics.values().filter(|d| d.0 >= 2004).count();
    assert!(old > 0 && old * 10 < young, "old {old}, young {young}");
    let dead = demographics.values().filter(|d| d.4.is_some()).count() as f64 / persons as f64;
    assert!((0.005..=0.02).contains(&dead), "death share {dead}");
    assert!(ben.i16s("ben_rng_gem").iter().all(|r| (1..=3).contains(r)));

    // Every claim, dispensing, ALD and stay belongs to a known source id, within the window and
    // before the death of its person.
    let death_by_psa: HashMap<&String, Option<i32>> =
        psa.iter().zip(&death).map(|(p, d)| (p, *d)).collect();
    let check_dates = |ids: &[String], dates: &[Option<i32>], table: &str| {
        for (id, date) in ids.iter().zip(dates) {
            let dead = death_by_psa
                .get(id)
                .unwrap_or_else(|| panic!("{table}: unknown source id"));
            let date = date.expect("non-null date");
            assert!(
                (WINDOW_START..=WINDOW_END).contains(&date),
                "{table}: date {date}"
            );
            if let Some(dead) = dead {
                assert!(date <= *dead, "{table}: care after death");
            }
        }
    };
    check_dates(
        &prs.strings("ben_nir_psa"),
        &prs.dates("exe_soi_dtd"),
        "er_prs_f",
    );
    check_dates(
        &pha.strings("ben_nir_psa"),
        &pha.dates("exe_soi_dtd"),
        "er_pha_f",
    );
    check_dates(
        &mco_c.strings("nir_ano_17"),
        &mco_c.dates("exe_soi_dtd"),
        "t_mco_c",
    );
    assert!(
        imb.strings("ben_nir_psa")
            .iter()
            .all(|p| psa_set.contains(p))
    );

    // Amounts: positive, in cents, reimbursed no more than paid.
    let paid = prs.f64s("prs_pai_mnt");
    let reimbursed = prs.f64s("bse_rem_mnt");
    for (p, r) in paid.iter().zip(&reimbursed) {
        assert!(*p > 0.0 && *r > 0.0 && r <= p, "paid {p}, reimbursed {r}");
        assert!(((p * 100.0).round() - p * 100.0).abs() < 1e-6);
    }
    let natures: HashSet<i32> = prs.i32s("prs_nat_ref").into_iter().collect();
    assert!(natures.len() >= 25 && natures.contains(&1111));
    let specialties = prs.i16s("pse_spe_cod");
    assert!(specialties.iter().all(|s| (1..=80).contains(s)));
    let gp = specialties.iter().filter(|&&s| s == 1).count();
    assert!(
        gp * 4 > specialties.len(),
        "general practice is not the most common specialty"
    );

    // Claims per person are skewed: a handful for most, hundreds for a few.
    let person_of: HashMap<&String, &String> = psa.iter().zip(&ano).collect();
    let mut claims_per_person: HashMap<&String, usize> = HashMap::new();
    for id in &prs.strings("ben_nir_psa") {
        *claims_per_person.entry(person_of[id]).or_default() += 1;
    }
    let mut counts: Vec<usize> = claims_per_person.values().copied().collect();
    counts.sort_unstable();
    let median = counts[counts.len() / 2];
    let max = counts.last().copied().unwrap_or(0);
    assert!(
        (3..=20).contains(&median),
        "median claims per person {median}"
    );
    assert!(max >= 200, "heaviest user has only {max} claims");

    // Codes used are in the reference lists.
    assert!(
        pha.strings("pha_atc_cla").iter().all(|c| atc.contains(c)),
        "unknown ATC code"
    );
    assert!(
        imb.strings("med_mtf_cod").iter().all(|c| cim10.contains(c)),
        "unknown ALD ICD-10 code"
    );
    let diagnoses = mco_b.strings("dgn_pal");
    assert!(
        diagnoses.iter().all(|c| cim10.contains(c)),
        "unknown principal diagnosis"
    );
    assert!(pha.i32s("pha_act_qsn").iter().all(|q| (1..=6).contains(q)));
    assert!(imb.i16s("imb_ald_num").iter().all(|n| (1..=32).contains(n)));
    let ald_persons: HashSet<&String> = imb
        .strings("ben_nir_psa")
        .iter()
        .map(|p| person_of[p])
        .collect::<HashSet<_>>();
    let ald_share = ald_persons.len() as f64 / persons as f64;
    assert!((0.08..=0.16).contains(&ald_share), "ALD share {ald_share}");

    // Stays: (eta_num, rsa_num) unique, the same set in both tables, about 15% of persons.
    let keys_c: Vec<(String, String)> = mco_c
        .strings("eta_num")
        .into_iter()
        .zip(mco_c.strings("rsa_num"))
        .collect();
    let keys_b: Vec<(String, String)> = mco_b
        .strings("eta_num")
        .into_iter()
        .zip(mco_b.strings("rsa_num"))
        .collect();
    let set_c: HashSet<&(String, String)> = keys_c.iter().collect();
    let set_b: HashSet<&(String, String)> = keys_b.iter().collect();
    assert_eq!(
        set_c.len(),
        keys_c.len(),
        "(eta_num, rsa_num) not unique in t_mco_c"
    );
    assert_eq!(
        set_b.len(),
        keys_b.len(),
        "(eta_num, rsa_num) not unique in t_mco_b"
    );
    assert_eq!(set_b, set_c);
    assert!(keys_c.iter().all(|(e, r)| e.len() == 9 && r.len() == 10));
    let stay_person: HashMap<&(String, String), &String> = keys_c
        .iter()
        .zip(mco_c.strings("nir_ano_17"))
        .map(|(k, p)| (k, person_of[&p]))
        .collect();
    let hospitalised: HashSet<&String> = stay_person.values().copied().collect();
    let stay_share = hospitalised.len() as f64 / persons as f64;
    assert!(
        (0.10..=0.20).contains(&stay_share),
        "share of persons with a stay {stay_share}"
    );
    let ghm = mco_b.strings("grg_ghm");
    assert!(ghm.iter().all(|g| g.len() == 6), "GHM shape");
    let lengths = mco_b.i32s("sej_nbj");
    assert!(lengths.iter().all(|l| (0..=120).contains(l)));
    let day_cases = lengths.iter().filter(|&&l| l == 0).count();
    assert!(day_cases * 5 > lengths.len() && day_cases < lengths.len());

    // age_ann agrees with the birth year and the entry date.
    let birth_by_psa: HashMap<&String, i16> =
        psa.iter().zip(&birth).map(|(p, b)| (p, *b)).collect();
    let entry = mco_c.dates("exe_soi_dtd");
    let entry_by_key: HashMap<&(String, String), (i32, &String)> = keys_c
        .iter()
        .zip(&entry)
        .zip(
            mco_c
                .strings("nir_ano_17")
                .iter()
                .map(|p| *psa_set.get(p).unwrap()),
        )
        .map(|((k, d), p)| (k, (d.unwrap(), p)))
        .collect();
    for (key, age) in keys_b.iter().zip(mco_b.i16s("age_ann")) {
        let (date, id) = entry_by_key[key];
        let year = year_of(date);
        let born = i32::from(birth_by_psa[id]);
        let age = i32::from(age);
        // Before or after the birthday in the year of the stay.
        assert!(
            age >= 0 && (year - born - 1..=year - born).contains(&age),
            "age {age}, born {born}, stay {year}"
        );
    }

    // Small cells occur naturally: communes with fewer than 11 persons and with at least 11;
    // principal diagnoses held by fewer than 11 persons.
    let mut commune_persons: HashMap<(&String, &String), usize> = HashMap::new();
    for (dpt_code, com, _, _) in demographics.values().map(|d| (d.2, d.3, d.0, d.1)) {
        *commune_persons.entry((dpt_code, com)).or_default() += 1;
    }
    assert!(
        commune_persons.values().any(|&n| n < 11),
        "no small commune"
    );
    assert!(
        commune_persons.values().any(|&n| n >= 11),
        "no large commune"
    );
    let departements_used: HashSet<&String> = commune_persons.keys().map(|k| k.0).collect();
    assert!(
        departements_used.len() >= 95,
        "only {} départements populated",
        departements_used.len()
    );
    let mut diagnosis_persons: HashMap<&String, HashSet<&String>> = HashMap::new();
    for (key, dgn) in keys_b.iter().zip(&diagnoses) {
        diagnosis_persons
            .entry(dgn)
            .or_default()
            .insert(stay_person[key]);
    }
    assert!(
        diagnosis_persons.values().any(|p| p.len() < 11),
        "no rare diagnosis"
    );
    assert!(
        diagnosis_persons.values().any(|p| p.len() >= 11),
        "no common diagnosis"
    );
}

#[test]
fn a_failed_run_leaves_previous_tables_and_no_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    run(100, 1, dir.path());
    let before = sha256(&dir.path().join("ir_ben_r.parquet"));
    // Too many persons is refused before anything is touched.
    let config = GenConfig {
        persons: u64::MAX,
        seed: 1,
        out_dir: dir.path().to_path_buf(),
    };
    assert!(matches!(
        generate(&config, &|_| {}),
        Err(SynthError::TooManyPersons { .. })
    ));
    assert_eq!(sha256(&dir.path().join("ir_ben_r.parquet")), before);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
