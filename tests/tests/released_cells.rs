//! Property: for random queries of the grammar (`tests/src/grammar.rs`),
//! checked against the raw data by the reference implementation of the
//! release rules (`tests/src/reference.rs`):
//!
//! - every released cell covers at least `min_persons` persons and is not
//!   dominated; every released value equals the reference's, and a value
//!   computed from fewer than `min_persons` contributing persons is NULL;
//! - in a result without margins, every cell that may be released is;
//! - in a table with margins (grouping sets, a UNION ALL of a total and its
//!   breakdown), no value suppressed by a primary rule can be narrowed by an
//!   attacker's linear programs over everything the query released;
//! - no released value holds an identifier;
//! - queries the grammar writes to be refused are refused under their rule,
//!   past a limit as a limit, and queries with failing functions under a
//!   CASE never fail while running;
//! - a role that rounds releases only multiples of its base.
//!
//! Reproduce a run with `SEUIL_PROPERTY_SEED=<seed>`; `SEUIL_PROPERTY_CASES`
//! sets the number of queries (default 1,000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seuil_engine::{EngineError, User};
use seuil_tests::grammar::{self, Expect, Oracle};
use seuil_tests::oracle::{assert_no_identifier, identifiers, raw_context, run_seuil};
use seuil_tests::reference::{self, RefCell, RefValue, Rules};
use seuil_tests::{attacker, open_engine, test_data};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn key_of(values: &[ScalarValue]) -> Vec<Option<String>> {
    values
        .iter()
        .map(|v| (!v.is_null()).then(|| v.to_string()))
        .collect()
}

/// Released rows by key: their values.
fn released_cells(
    batches: &[RecordBatch],
    group_columns: usize,
) -> BTreeMap<Vec<Option<String>>, Vec<ScalarValue>> {
    let mut cells = BTreeMap::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values: Vec<ScalarValue> = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row).expect("a value"))
                .collect();
            cells.insert(
                key_of(&values[..group_columns]),
                values[group_columns..].to_vec(),
            );
        }
    }
    cells
}

fn same(released: &ScalarValue, reference: &RefValue) -> bool {
    match reference {
        RefValue::Null => released.is_null(),
        RefValue::Scalar(ScalarValue::Float64(Some(x))) => same(released, &RefValue::Number(*x)),
        RefValue::Scalar(value) => released == value,
        RefValue::Number(expected) => {
            let Ok(ScalarValue::Float64(Some(got))) =
                released.cast_to(&datafusion::arrow::datatypes::DataType::Float64)
            else {
                return false;
            };
            (got - expected).abs() <= 1e-9 * got.abs().max(expected.abs()).max(1.0)
        }
    }
}

fn number(value: &RefValue) -> f64 {
    match value {
        RefValue::Number(x) => *x,
        _ => 0.0,
    }
}

#[derive(Default)]
struct Tally {
    released_cells: usize,
    values_nulled: usize,
    margin_tables: usize,
    audited: usize,
    refused: usize,
    /// Queries stopped by their deadline (slow secondary suppression).
    timed_out: usize,
    /// Measures of tables with margins whose clamped sums are not additive.
    not_additive: usize,
}

/// What the released cells are checked against: the raw data, the role's
/// rules, and the protection margins must give.
struct Checker<'a> {
    raw: &'a SessionContext,
    rules: &'a Rules,
    protection: f64,
}

/// Checks the released cells of an accepted query against the reference.
async fn check_cells(
    checker: &Checker<'_>,
    oracle: &Oracle,
    batches: &[RecordBatch],
    group_columns: usize,
    tally: &mut Tally,
    context: &str,
) {
    let (raw, rules, protection) = (checker.raw, checker.rules, checker.protection);
    let released = released_cells(batches, group_columns);
    let mut cells: Vec<RefCell> = Vec::new();
    for part in &oracle.parts {
        cells.extend(reference::cells(raw, part, rules).await);
    }
    let by_key: BTreeMap<&Vec<Option<String>>, &RefCell> =
        cells.iter().map(|c| (&c.key, c)).collect();
    let having = oracle.parts[0].having_rows_over;
    for (key, values) in &released {
        let cell = by_key
            .get(key)
            .unwrap_or_else(|| panic!("released cell {key:?} is not in the raw data\n{context}"));
        assert!(
            cell.persons >= rules.k,
            "released cell {key:?} covers {} persons\n{context}",
            cell.persons
        );
        assert!(
            !cell.dominated,
            "released cell {key:?} is dominated\n{context}"
        );
        if let Some(n) = having {
            assert!(
                cell.rows > n,
                "cell {key:?} passed HAVING wrongly\n{context}"
            );
        }
        for (j, (value, (expected, contributors))) in values.iter().zip(&cell.values).enumerate() {
            if *contributors < rules.k {
                assert!(
                    value.is_null(),
                    "value {j} of cell {key:?} comes from {contributors} persons and was released: {value}\n{context}"
                );
                tally.values_nulled += 1;
            } else {
                assert!(
                    same(value, expected),
                    "value {j} of cell {key:?}: released {value}, reference {expected:?}\n{context}"
                );
            }
        }
    }
    tally.released_cells += released.len();
    let margins = oracle.parts.len() > 1 || oracle.parts.iter().any(|p| p.has_margins());
    if !margins {
        for cell in &cells {
            if cell.eligible(rules) && having.is_none_or(|n| cell.rows > n) {
                assert!(
                    released.contains_key(&cell.key),
                    "cell {:?} of {} persons was not released\n{context}",
                    cell.key,
                    cell.persons
                );
            }
        }
        return;
    }
    tally.margin_tables += 1;
    // The attacker: every released value and the relations of the table.
    let tagged = usize::from(oracle.parts[0].tag.is_some());
    let keys: Vec<attacker::CellKey> = cells.iter().map(|c| c.key[tagged..].to_vec()).collect();
    let relations = attacker::relations(&keys);
    for (j, spec) in oracle.parts[0].values.iter().enumerate() {
        if !spec.kind.is_additive() {
            continue;
        }
        let values: Vec<f64> = cells.iter().map(|c| number(&c.values[j].0)).collect();
        // Sums clamped per person are additive only while no person's sum
        // over a total passes the bound: past it, a total is less than its
        // cells (each clamped apart), and the equalities this attacker
        // knows do not hold on the true values. The engine's own audit
        // takes them as equalities all the same, which narrows its
        // attacker's ranges, so it suppresses at least as much as the
        // truth needs; the check here has no exact attacker to compare
        // with, and counts such tables apart.
        let additive = relations.iter().all(|(plus, minus)| {
            let side = |cells: &[usize]| cells.iter().map(|&c| values[c]).sum::<f64>();
            let (a, b) = (side(plus), side(minus));
            (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
        });
        if !additive {
            tally.not_additive += 1;
            continue;
        }
        let seen: Vec<bool> = cells
            .iter()
            .map(|c| released.get(&c.key).is_some_and(|v| !v[j].is_null()))
            .collect();
        for (i, cell) in cells.iter().enumerate() {
            let primary = !cell.eligible(rules) || cell.values[j].1 < rules.k;
            if seen[i] || !primary {
                continue;
            }
            tally.audited += 1;
            if let Ok(path) = std::env::var("SEUIL_DEBUG_DUMP") {
                let mut dump = String::new();
                for (c, cell) in cells.iter().enumerate() {
                    dump.push_str(&format!(
                        "{:?}\t{}\t{}\t{}\t{}\t{}\n",
                        cell.key,
                        values[c],
                        cell.persons,
                        cell.values[j].1,
                        cell.dominated,
                        seen[c]
                    ));
                }
                std::fs::write(&path, dump).expect("dump");
            }
            let Some(range) = attacker::range(&values, &seen, &relations, i) else {
                panic!("released values contradict the table's relations\n{context}");
            };
            assert!(
                attacker::protects(range, values[i], protection),
                "suppressed value {j} of cell {:?} = {} can be narrowed to {range:?}\n{context}",
                cell.key,
                values[i]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_values_follow_the_rules_against_the_raw_data() {
    let seed = env_u64("SEUIL_PROPERTY_SEED").unwrap_or_else(rand::random);
    let cases = env_u64("SEUIL_PROPERTY_CASES").unwrap_or(1_000);
    println!("property seed {seed} ({cases} queries); rerun with SEUIL_PROPERTY_SEED={seed}");

    let data = test_data(4_000, 5);
    let engine = open_engine(data.path()).await;
    let raw = raw_context(&engine);
    let ids = identifiers(&raw).await;
    let alice = User::new("alice", "researcher");
    let rita = User::new("rita", "regional");
    let role = &engine.policy().roles["researcher"];
    let rules = Rules {
        k: role.min_persons as usize,
        exclude: role.order_statistics.exclude as usize,
        dominance: role.dominance.map(|d| (d.n as usize, d.k)),
        p_percent: role.p_percent,
    };
    let protection = role.protection_percent / 100.0;
    let base = engine.policy().roles["regional"]
        .rounding
        .expect("the regional role rounds");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut rounded_values = 0usize;

    for case in 0..cases {
        let query = grammar::generate(&mut rng);
        let context = format!("case {case} of seed {seed}\n{}", query.sql);
        let started = std::time::Instant::now();
        let outcome = run_seuil(&engine, &alice, &query.sql).await;
        if started.elapsed() > std::time::Duration::from_secs(2) {
            println!("slow ({:?}): {context}", started.elapsed());
        }
        if let Ok((batches, _)) = &outcome {
            assert_no_identifier(batches, &ids, &context);
        }
        match (&query.expect, outcome) {
            (Expect::Refused(rule), Err(EngineError::Refused(refusal))) => {
                assert_eq!(refusal.rule.code(), *rule, "{refusal}\n{context}");
                tally.refused += 1;
            }
            (Expect::Refused(rule), other) => {
                panic!("expected a refusal by {rule}, got {other:?}\n{context}")
            }
            (Expect::Limit, Err(EngineError::Limit(_))) => tally.refused += 1,
            (Expect::Limit, other) => panic!("expected a limit, got {other:?}\n{context}"),
            (
                Expect::NoRuntimeError,
                Err(error @ (EngineError::Execution(_) | EngineError::Internal(_))),
            ) => {
                panic!("a query failed while running: {error}\n{context}")
            }
            (Expect::NoRuntimeError, _) => {}
            (Expect::Cells(oracle), Ok((batches, _))) => {
                let checker = Checker {
                    raw: &raw,
                    rules: &rules,
                    protection,
                };
                check_cells(
                    &checker,
                    oracle,
                    &batches,
                    query.group_columns,
                    &mut tally,
                    &context,
                )
                .await;
            }
            // Withholding everything is safe; a query stopped by its
            // deadline is a cost to measure, not a leak. Bounded below.
            (Expect::Cells(_), Err(EngineError::Limit(message)))
                if message.contains("ran longer") =>
            {
                println!("stopped by its deadline: {context}");
                tally.timed_out += 1;
            }
            (Expect::Cells(_), Err(error)) => {
                panic!("a grammar query was not answered: {error}\n{context}")
            }
        }

        // The same query for a role that rounds: only multiples of its base.
        if let Ok((batches, _)) = run_seuil(&engine, &rita, &query.sql).await {
            for batch in &batches {
                for column in &batch.columns()[query.group_columns..] {
                    assert!(
                        column.data_type().is_numeric(),
                        "role regional released a value that is not a number\n{context}"
                    );
                    let values = datafusion::arrow::compute::cast(
                        column,
                        &datafusion::arrow::datatypes::DataType::Float64,
                    )
                    .expect("numbers");
                    for v in values
                        .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .iter()
                        .flatten()
                    {
                        assert!(
                            (v / f64::from(base)).fract() == 0.0,
                            "role regional released {v}, not a multiple of {base}\n{context}"
                        );
                        rounded_values += 1;
                    }
                }
            }
        }
    }
    println!(
        "{cases} queries: {} cells released, {} values nulled for too few contributors, {} tables with margins ({} suppressed values audited, {} clamped sums not additive), {} refused as expected, {} stopped by their deadline; {rounded_values} rounded values",
        tally.released_cells,
        tally.values_nulled,
        tally.margin_tables,
        tally.audited,
        tally.not_additive,
        tally.refused,
        tally.timed_out
    );
    // Clamping binds for a few persons only: most tables are checked.
    assert!(
        tally.not_additive * 10 <= tally.margin_tables.max(10),
        "{} of {} tables with margins had clamped sums that are not additive",
        tally.not_additive,
        tally.margin_tables
    );
    assert!(
        tally.timed_out as u64 <= cases / 100,
        "{} of {cases} queries ran past their deadline",
        tally.timed_out
    );
    assert!(
        tally.values_nulled > 0,
        "the grammar should produce values of few persons"
    );
    assert!(
        tally.audited > 0,
        "the grammar should produce tables with small cells"
    );
    assert!(
        rounded_values > 0,
        "the rounding role should answer some queries"
    );
}
