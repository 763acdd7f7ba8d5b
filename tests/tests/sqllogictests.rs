//! Runs every `tests/slt/*.slt` file through the engine on the synthetic
//! SNDS (3,000 persons, seed 11), or, for a file whose first line is
//! `# fixture: NAME`, on the hand-made tables and policy of
//! `tests/slt/fixtures/NAME/`. `cargo test -p seuil-tests --test
//! sqllogictests -- --complete` rewrites the expected results in place;
//! review the diff before committing it. A file name given as an argument
//! runs only the files whose names contain it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::PathBuf;
use std::process::ExitCode;

use seuil_tests::{SLT_PERSONS, SLT_SEED, SltDb, fixture_engine, open_engine, test_data};
use sqllogictest::{Runner, default_column_validator, default_normalizer, default_validator};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let data = test_data(SLT_PERSONS, SLT_SEED);
    let engine = runtime.block_on(open_engine(data.path()));

    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(f.as_str()))
                })
        })
        .collect();
    files.sort();

    let mut failures = 0;
    let mut fixtures = Vec::new();
    for file in &files {
        let first_line = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
            .unwrap_or_default();
        let engine = match first_line.strip_prefix("# fixture: ") {
            Some(name) => {
                let (engine, folder) = runtime.block_on(fixture_engine(name.trim()));
                fixtures.push(folder);
                engine
            }
            None => engine.clone(),
        };
        let mut runner = Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(SltDb::new(engine)) }
        });
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let outcome = if complete {
            runtime
                .block_on(runner.update_test_file(
                    file,
                    " ",
                    default_validator,
                    default_normalizer,
                    default_column_validator,
                ))
                .map_err(|e| e.to_string())
        } else {
            runtime
                .block_on(runner.run_file_async(file))
                .map_err(|e| e.display(true).to_string())
        };
        match outcome {
            Ok(()) => println!("ok      {name}"),
            Err(error) => {
                failures += 1;
                println!("FAILED  {name}\n{error}");
            }
        }
    }
    println!("{} files, {failures} failed", files.len());
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
