//! The checked-in JSON Schema (`policies/schema.json`), which editors use to
//! validate and complete rule files, is the one generated from the format's
//! types. Regenerate it with `seuil policy schema > policies/schema.json`, or
//! run this test with `SEUIL_BLESS=1`.

use std::path::PathBuf;

#[test]
fn the_checked_in_json_schema_is_up_to_date() {
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("schema.json");
    let generated = serde_json::to_string_pretty(&seuil_policies::json_schema()).unwrap() + "\n";
    if std::env::var_os("SEUIL_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "policies/schema.json is out of date: run `seuil policy schema > policies/schema.json` (or this test with SEUIL_BLESS=1)"
    );
}

#[test]
fn the_schema_describes_the_format() {
    let schema = seuil_policies::json_schema();
    let text = schema.to_string();
    for key in [
        "person_via",
        "min_persons",
        "row_filter",
        "quasi_identifier",
        "dominance",
    ] {
        assert!(text.contains(key), "the schema should mention {key}");
    }
    assert_eq!(schema["title"], "RawPolicy");
}
