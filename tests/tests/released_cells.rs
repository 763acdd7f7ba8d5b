//! Property: for random accepted queries, every released cell covers at
//! least `min_persons` distinct persons and equals the raw answer exactly,
//! and every raw cell with enough persons is released. Checked against the
//! raw data with plain DataFusion. Reproduce a run with
//! `SEUIL_PROPERTY_SEED=<seed>`; `SEUIL_PROPERTY_CASES` sets the number of
//! queries (default 1,000).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seuil_engine::User;
use seuil_tests::grammar;
use seuil_tests::oracle::{cells, raw_context, run_raw, run_seuil, same_value};
use seuil_tests::{open_engine, test_data};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_cells_cover_enough_persons_and_equal_the_raw_answer() {
    let seed = env_u64("SEUIL_PROPERTY_SEED").unwrap_or_else(rand::random);
    let cases = env_u64("SEUIL_PROPERTY_CASES").unwrap_or(1_000);
    println!("property seed {seed} ({cases} queries); rerun with SEUIL_PROPERTY_SEED={seed}");

    let data = test_data(4_000, 5);
    let engine = open_engine(data.path()).await;
    let raw = raw_context(&engine);
    let alice = User::new("alice", "researcher");
    let k = i64::from(engine.policy().roles["researcher"].min_persons);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let (mut released_total, mut suppressed_total) = (0u64, 0u64);
    for case in 0..cases {
        let query = grammar::generate(&mut rng);
        let context = format!(
            "case {case} of seed {seed}\nseuil: {}\nraw:   {}",
            query.seuil_sql, query.raw_sql
        );
        let (batches, report) = run_seuil(&engine, &alice, &query.seuil_sql)
            .await
            .unwrap_or_else(|e| panic!("a grammar query was not answered: {e}\n{context}"));
        let released = cells(&batches, query.group_columns);
        let raw = cells(&run_raw(&raw, &query.raw_sql).await, query.group_columns);

        for (key, values) in &released {
            let raw_values = raw.get(key).unwrap_or_else(|| {
                panic!("released cell {key} is not in the raw answer\n{context}")
            });
            let (raw_persons, raw_aggregates) = raw_values.split_last().expect("persons column");
            let persons = match raw_persons {
                datafusion::scalar::ScalarValue::Int64(Some(n)) => *n,
                other => panic!("unexpected person count {other:?}\n{context}"),
            };
            assert!(
                persons >= k,
                "released cell {key} covers {persons} persons, under {k}\n{context}"
            );
            assert_eq!(values.len(), raw_aggregates.len(), "{context}");
            for (value, raw_value) in values.iter().zip(raw_aggregates) {
                assert!(
                    same_value(value, raw_value),
                    "cell {key}: released {value:?}, raw {raw_value:?}\n{context}"
                );
            }
        }
        for (key, raw_values) in &raw {
            if let Some(datafusion::scalar::ScalarValue::Int64(Some(persons))) = raw_values.last()
                && *persons >= k
            {
                assert!(
                    released.contains_key(key),
                    "cell {key} covers {persons} persons but was not released\n{context}"
                );
            }
        }
        released_total += report.cells_released;
        suppressed_total += report.cells_suppressed;
    }
    println!("{cases} queries: {released_total} cells released, {suppressed_total} suppressed");
    assert!(
        suppressed_total > 0,
        "the grammar should produce small cells"
    );
}
