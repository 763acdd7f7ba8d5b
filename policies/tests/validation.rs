//! Every kind of invalid policy gives one clear, located error.

use seuil_policies::{ColumnType, DataSchema, PolicySource, SNDS_POLICY, check};

const BASE: &str = r#"[policy]
name = "tiny"
version = "1"
min_persons_floor = 5

[person]
table = "ben"
column = "person_id"

[tables.ben]
kind = "private"
columns.person_id = { class = "identifier" }
columns.source_id = { class = "identifier" }
columns.age = { class = "quasi_identifier" }

[tables.claims]
kind = "private"
person_via = { table = "ben", columns = ["source_id"], references = ["source_id"] }
columns.source_id = { class = "identifier" }
columns.amount = { class = "sensitive", bounds = [0.0, 100.0] }

[tables.codes]
kind = "public"
columns.code = { class = "public" }

[roles.researcher]
min_persons = 11
tables.ben = {}
tables.claims = { row_filter = "amount > 0" }
tables.codes = {}
"#;

/// Applies `from -> to` to the base policy and returns the rendered errors.
fn errors_after(from: &str, to: &str) -> String {
    assert!(
        BASE.contains(from),
        "test setup: {from:?} not in the base policy"
    );
    let source = PolicySource::new("tiny.toml", BASE.replacen(from, to, 1));
    let (policy, diagnostics) = check(&source, None);
    assert!(policy.is_none(), "expected the policy to be refused");
    assert!(diagnostics.has_errors());
    diagnostics.render(&source)
}

fn assert_error(from: &str, to: &str, expected: &str) {
    let rendered = errors_after(from, to);
    assert!(
        rendered.lines().any(|line| line == expected),
        "expected line\n  {expected}\nin\n{rendered}"
    );
}

#[test]
fn the_base_policy_and_the_shipped_policy_are_valid() {
    for (name, text) in [("tiny.toml", BASE), ("snds.toml", SNDS_POLICY)] {
        let source = PolicySource::new(name, text);
        let (policy, diagnostics) = check(&source, None);
        assert!(!diagnostics.has_errors(), "{}", diagnostics.render(&source));
        assert!(policy.is_some());
    }
}

#[test]
fn malformed_toml_is_located() {
    assert_error(
        "version = \"1\"",
        "version = \"1",
        "tiny.toml:3:13: error: invalid basic string, expected `\"`",
    );
}

#[test]
fn unknown_key_is_located() {
    assert_error(
        "min_persons = 11",
        "min_person = 11",
        "tiny.toml:27:1: error: unknown field `min_person`, expected one of `mode`, `min_persons`, `dominance`, `p_percent`, `rounding`, `order_statistics`, `protection_percent`, `dp`, `tables`",
    );
}

#[test]
fn wrong_type_is_located() {
    assert_error(
        "min_persons = 11",
        "min_persons = \"eleven\"",
        "tiny.toml:27:15: error: invalid type: string \"eleven\", expected u32",
    );
}

#[test]
fn unknown_class_is_located() {
    assert_error(
        "columns.age = { class = \"quasi_identifier\" }",
        "columns.age = { class = \"secret\" }",
        "tiny.toml:14:25: error: unknown variant `secret`, expected one of `identifier`, `quasi_identifier`, `sensitive`, `public`",
    );
}

#[test]
fn duplicate_table_is_located() {
    let rendered = errors_after("[tables.codes]", "[tables.claims]");
    assert!(
        rendered.starts_with("tiny.toml:22:9: error: duplicate key"),
        "{rendered}"
    );
}

#[test]
fn path_cycle_is_reported() {
    let text = BASE.replacen(
        "[tables.codes]",
        "[tables.visits]\nkind = \"private\"\nperson_via = { table = \"stays\", columns = [\"id\"], references = [\"id\"] }\ncolumns.id = { class = \"identifier\" }\n\n[tables.stays]\nkind = \"private\"\nperson_via = { table = \"visits\", columns = [\"id\"], references = [\"id\"] }\ncolumns.id = { class = \"identifier\" }\n\n[tables.codes]",
        1,
    );
    let source = PolicySource::new("tiny.toml", text);
    let (_, diagnostics) = check(&source, None);
    let rendered = diagnostics.render(&source);
    assert!(
        rendered.contains(
            "tiny.toml:27:9: error: person_via of stays goes round in a cycle (stays -> visits -> stays) and never reaches the person table ben"
        ),
        "{rendered}"
    );
    assert!(rendered.contains("tiny.toml:22:9: error: person_via of visits goes round in a cycle"));
}

#[test]
fn private_table_without_path_is_refused() {
    assert_error(
        "person_via = { table = \"ben\", columns = [\"source_id\"], references = [\"source_id\"] }\n",
        "",
        "tiny.toml:16:9: error: private table claims needs person_via = { table = ..., columns = [...], references = [...] } leading towards the person table ben",
    );
}

#[test]
fn path_to_unknown_table_or_column_is_refused() {
    assert_error(
        "person_via = { table = \"ben\"",
        "person_via = { table = \"bens\"",
        "tiny.toml:18:24: error: person_via of claims names unknown table bens",
    );
    assert_error(
        "references = [\"source_id\"] }",
        "references = [\"sourceid\"] }",
        "tiny.toml:18:70: error: person_via reference sourceid is not a column of ben",
    );
}

#[test]
fn path_to_a_public_table_is_refused() {
    assert_error(
        "person_via = { table = \"ben\", columns = [\"source_id\"], references = [\"source_id\"] }",
        "person_via = { table = \"codes\", columns = [\"source_id\"], references = [\"code\"] }",
        "tiny.toml:18:24: error: person_via of claims leads to public table codes, which holds no person",
    );
}

#[test]
fn identifier_classed_public_is_refused() {
    assert_error(
        "columns.source_id = { class = \"identifier\" }\ncolumns.amount",
        "columns.source_id = { class = \"public\" }\ncolumns.amount",
        "tiny.toml:18:42: error: claims.source_id references identifier ben.source_id and must be classed identifier, not public",
    );
    assert_error(
        "columns.person_id = { class = \"identifier\" }",
        "columns.person_id = { class = \"public\" }",
        "tiny.toml:8:10: error: the person column ben.person_id must be classed identifier, not public",
    );
}

#[test]
fn identifier_in_public_table_is_refused() {
    assert_error(
        "columns.code = { class = \"public\" }",
        "columns.code = { class = \"identifier\" }",
        "tiny.toml:24:9: error: public table codes cannot have an identifier column (code): a table with identifiers holds persons and must be private",
    );
}

#[test]
fn threshold_below_floor_is_refused() {
    assert_error(
        "min_persons = 11",
        "min_persons = 3",
        "tiny.toml:27:15: error: role researcher sets min_persons = 3, below the policy's floor of 5",
    );
}

#[test]
fn sensitive_column_needs_bounds() {
    assert_error(
        "columns.amount = { class = \"sensitive\", bounds = [0.0, 100.0] }",
        "columns.amount = { class = \"sensitive\" }",
        "tiny.toml:20:9: error: sensitive column claims.amount needs bounds = [lower, upper] to clamp each person's contribution",
    );
    assert_error(
        "bounds = [0.0, 100.0]",
        "bounds = [100.0, 0.0]",
        "tiny.toml:20:50: error: bounds of claims.amount must be two finite numbers, lower first",
    );
}

#[test]
fn scope_names_must_exist() {
    assert_error(
        "tables.codes = {}",
        "tables.labels = {}",
        "tiny.toml:30:8: error: role researcher is given table labels, which the policy does not list under [tables]",
    );
    assert_error(
        "tables.ben = {}",
        "tables.ben = { columns = [\"age\", \"height\"] }",
        "tiny.toml:28:34: error: role researcher is given column ben.height, which the policy does not list",
    );
}

#[test]
fn row_filters_are_checked() {
    assert_error(
        "row_filter = \"amount > 0\"",
        "row_filter = \"amount >\"",
        "tiny.toml:29:33: error: row_filter of claims is not a SQL condition: sql parser error: Expected: an expression, found: EOF",
    );
    assert_error(
        "row_filter = \"amount > 0\"",
        "row_filter = \"height > 0\"",
        "tiny.toml:29:33: error: row_filter of claims uses height, which is not a column of claims in the policy",
    );
}

#[test]
fn dp_mode_needs_its_settings() {
    assert_error(
        "min_persons = 11\n",
        "mode = \"dp\"\nmin_persons = 11\n",
        "tiny.toml:26:8: error: role researcher is in dp mode and needs a [roles.researcher.dp] section with epsilon_budget and epsilon_per_query",
    );
}

fn tiny_data() -> DataSchema {
    let mut data = DataSchema {
        location: "data/".into(),
        ..Default::default()
    };
    data.tables.insert(
        "ben".into(),
        vec![
            ("person_id".into(), ColumnType::Text),
            ("source_id".into(), ColumnType::Text),
            ("age".into(), ColumnType::Integer),
            ("secret_note".into(), ColumnType::Text),
        ],
    );
    data.tables.insert(
        "claims".into(),
        vec![
            ("source_id".into(), ColumnType::Text),
            ("amount".into(), ColumnType::Float),
        ],
    );
    data.tables
        .insert("codes".into(), vec![("code".into(), ColumnType::Text)]);
    data
}

#[test]
fn policy_is_checked_against_the_data() {
    let source = PolicySource::new("tiny.toml", BASE);
    let data = tiny_data();
    let (policy, diagnostics) = check(&source, Some(&data));
    assert!(policy.is_some(), "{}", diagnostics.render(&source));
    assert_eq!(
        diagnostics.render(&source),
        "tiny.toml:10:9: warning: columns of ben in the data but not in the policy stay hidden from every role: secret_note"
    );

    let mut missing = tiny_data();
    missing.tables.remove("codes");
    missing.tables.get_mut("claims").unwrap()[1].1 = ColumnType::Text;
    let (policy, diagnostics) = check(&source, Some(&missing));
    assert!(policy.is_none());
    let rendered = diagnostics.render(&source);
    assert!(
        rendered.contains(
            "tiny.toml:20:9: error: sensitive column claims.amount must be numeric in the data, found Text"
        ),
        "{rendered}"
    );
    assert!(
        rendered.contains(
            "tiny.toml:22:9: error: table codes is not in the data at data/ (tables there: ben, claims)"
        ),
        "{rendered}"
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = BASE
        .replacen("min_persons = 11", "min_persons = 2", 1)
        .replacen("tables.codes = {}", "tables.labels = {}", 1);
    let source = PolicySource::new("tiny.toml", text);
    let (_, diagnostics) = check(&source, None);
    assert_eq!(diagnostics.0.len(), 2, "{}", diagnostics.render(&source));
}

#[test]
fn person_keys_follow_links() {
    let (policy, _) = check(&PolicySource::new("snds.toml", SNDS_POLICY), None);
    let policy = policy.unwrap();
    assert_eq!(
        policy.person_keys("ir_ben_r"),
        vec![
            vec!["ben_nir_ano".to_string()],
            vec!["ben_nir_psa".to_string()]
        ]
    );
    assert_eq!(
        policy.person_keys("t_mco_c"),
        vec![
            vec!["nir_ano_17".to_string()],
            vec!["eta_num".to_string(), "rsa_num".to_string()]
        ]
    );
    let path: Vec<&str> = policy
        .path_to_person("t_mco_b")
        .iter()
        .map(|l| l.table.as_str())
        .collect();
    assert_eq!(path, vec!["t_mco_c", "ir_ben_r"]);
    assert!(policy.person_keys("ref_cim10").is_empty());
}
