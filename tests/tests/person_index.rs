//! The person index (engine/src/person_index.rs) changes how persons are
//! found, never what is released: with and without it, every query gets
//! the same cells, the same report and the same refusals, for a role that
//! scans the keyed tables and for one whose row filters make it join. And the
//! index follows its data: rebuilt when a table changes, shared by engines
//! that open the same folder at once, and never required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seuil_engine::{Engine, EngineOptions, PersonIndexSetting, User};
use seuil_policies::PolicySource;
use seuil_tests::grammar;
use seuil_tests::oracle::{cells, run_seuil};
use seuil_tests::test_data;

async fn engine_with(data: &Path, person_index: PersonIndexSetting) -> Engine {
    let source = PolicySource::new("policies/snds.toml", seuil_policies::SNDS_POLICY);
    let options = EngineOptions {
        person_index,
        ..EngineOptions::default()
    };
    let (engine, _) = Engine::open_files(&source, data, options)
        .await
        .expect("opening the engine");
    engine
}

/// The index folders under `root` (complete ones, not partial builds).
fn index_folders(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What a query gives, in a form two engines can be compared on.
async fn outcome(engine: &Engine, user: &User, sql: &str, group_columns: usize) -> String {
    match run_seuil(engine, user, sql).await {
        Ok((batches, report)) => format!(
            "{} released, {} suppressed: {:?}",
            report.cells_released,
            report.cells_suppressed,
            cells(&batches, group_columns)
        ),
        Err(error) => format!("error: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_and_the_joins_release_the_same_cells() {
    let data = test_data(3_000, 21);
    let indexed = engine_with(data.path(), PersonIndexSetting::InDataFolder).await;
    let joined = engine_with(data.path(), PersonIndexSetting::Off).await;
    assert!(indexed.data().person_index().is_some());
    assert!(joined.data().person_index().is_none());

    let users = [
        User::new("alice", "researcher"),
        // A row filter on ir_ben_r: scans of er_prs_f join along their path.
        User::new("rita", "regional"),
    ];
    let seed = 7;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut answered = [0, 0];
    for case in 0..300 {
        let query = grammar::generate(&mut rng);
        for (u, user) in users.iter().enumerate() {
            let with_index = outcome(&indexed, user, &query.sql, query.group_columns).await;
            let with_joins = outcome(&joined, user, &query.sql, query.group_columns).await;
            assert_eq!(
                with_index, with_joins,
                "case {case} of seed {seed}, user {}\n{}",
                user.name, query.sql
            );
            if !with_index.starts_with("error") {
                answered[u] += 1;
            }
        }
    }
    // Both roles must have had real answers to compare, not only refusals
    // (the grammar writes a third of its queries to be refused).
    assert!(answered[0] > 150, "alice answered {}", answered[0]);
    assert!(answered[1] > 20, "rita answered {}", answered[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_table_gets_a_new_index_and_the_old_one_goes() {
    let data = test_data(1_000, 22);
    let root = data.path().join(".seuil-index");
    let alice = User::new("alice", "researcher");
    let sql = "SELECT prs_nat_ref, count(*) FROM er_prs_f GROUP BY 1";

    let engine = engine_with(data.path(), PersonIndexSetting::InDataFolder).await;
    let before = outcome(&engine, &alice, sql, 1).await;
    let first = index_folders(&root);
    assert_eq!(first.len(), 1, "{first:?}");
    #[cfg(unix)]
    {
        // Copies of health data: readable by the engine's user only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "index folder mode {mode:o}");
    }

    // Opening again reuses the index.
    engine_with(data.path(), PersonIndexSetting::InDataFolder).await;
    assert_eq!(index_folders(&root), first);

    // Rewrite er_prs_f with half its rows: the index must follow.
    let file = data.path().join("er_prs_f.parquet");
    let ctx = datafusion::prelude::SessionContext::new();
    let half = ctx
        .read_parquet(file.to_str().unwrap(), Default::default())
        .await
        .unwrap()
        .filter(datafusion::prelude::col("prs_nat_ref").lt(datafusion::prelude::lit(1400)))
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        half[0].schema(),
        None,
    )
    .unwrap();
    for batch in &half {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();

    let engine = engine_with(data.path(), PersonIndexSetting::InDataFolder).await;
    let second = index_folders(&root);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "the index of the old data must go");
    let after = outcome(&engine, &alice, sql, 1).await;
    let joined = engine_with(data.path(), PersonIndexSetting::Off).await;
    assert_eq!(after, outcome(&joined, &alice, sql, 1).await);
    assert_ne!(after, before, "the answer must come from the new data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_opening_together_share_one_complete_index() {
    let data = test_data(1_000, 23);
    let folder = data.path().join("elsewhere");
    let opens =
        (0..4).map(|_| engine_with(data.path(), PersonIndexSetting::Folder(folder.clone())));
    let engines = futures::future::join_all(opens).await;
    let names = index_folders(&folder);
    assert_eq!(
        names.len(),
        1,
        "one index, no partial build left: {names:?}"
    );
    assert!(!data.path().join(".seuil-index").exists());
    let alice = User::new("alice", "researcher");
    let sql = "SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY 1";
    let first = outcome(&engines[0], &alice, sql, 1).await;
    for engine in &engines[1..] {
        assert!(engine.data().person_index().is_some());
        assert_eq!(outcome(engine, &alice, sql, 1).await, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_cannot_be_written_is_not_needed() {
    let data = test_data(1_000, 24);
    // A file where the index folder should be: nothing can be created there.
    let blocked = data.path().join("not-a-folder");
    std::fs::write(&blocked, b"").unwrap();
    let engine = engine_with(
        data.path(),
        PersonIndexSetting::Folder(blocked.join("index")),
    )
    .await;
    assert!(engine.data().person_index().is_none());
    let joined = engine_with(data.path(), PersonIndexSetting::Off).await;
    let alice = User::new("alice", "researcher");
    let sql = "SELECT prs_nat_ref, count(*) FROM er_prs_f GROUP BY 1";
    let answer = outcome(&engine, &alice, sql, 1).await;
    assert!(answer.contains("released"), "{answer}");
    assert_eq!(answer, outcome(&joined, &alice, sql, 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_removed_under_a_running_engine_fails_its_queries() {
    let data = test_data(1_000, 25);
    let engine = engine_with(data.path(), PersonIndexSetting::InDataFolder).await;
    let alice = User::new("alice", "researcher");
    let sql = "SELECT prs_nat_ref, count(*) FROM er_prs_f GROUP BY 1";
    assert!(outcome(&engine, &alice, sql, 1).await.contains("released"));
    std::fs::remove_dir_all(data.path().join(".seuil-index")).unwrap();
    // Not an empty table with every cell gone: an error, until a restart
    // builds the index again.
    let answer = outcome(&engine, &alice, sql, 1).await;
    assert!(answer.starts_with("error: "), "{answer}");
    assert!(!answer.contains(data.path().to_str().unwrap()), "{answer}");
}
