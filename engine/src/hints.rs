//! Refusal hints in the policy's own words: examples built from its tables,
//! classes and person paths, so that the advice fits whatever policy is in
//! force, not only the SNDS one.

use seuil_policies::{ColumnClass, ColumnType, DataSchema, Policy, TableKind};

/// An aggregate this policy releases: a count by a quasi-identifier of the
/// person table, or else of the first private table that has one, a text
/// column (a code) where the data has one.
pub fn aggregate_example(policy: &Policy, data: &DataSchema) -> String {
    let person_table = policy.tables.get(&policy.person.table);
    let tables: Vec<_> = person_table
        .into_iter()
        .chain(
            policy
                .tables
                .values()
                .filter(|t| t.kind == TableKind::Private),
        )
        .collect();
    let quasi_identifier = |text_only: bool| {
        tables.iter().find_map(|table| {
            table
                .columns
                .iter()
                .filter(|(_, c)| c.class == ColumnClass::QuasiIdentifier)
                .find(|(column, _)| {
                    !text_only || data.column_type(&table.name, column) == Some(&ColumnType::Text)
                })
                .map(|(column, _)| (table.name.as_str(), column.as_str()))
        })
    };
    let example = quasi_identifier(true).or_else(|| quasi_identifier(false));
    match example {
        Some((table, column)) => {
            format!("SELECT {column}, count(*) FROM {table} GROUP BY {column}")
        }
        None => "SELECT <describing column>, count(*) FROM <table> GROUP BY 1".to_string(),
    }
}

/// The keys along which this policy's private tables reach their person,
/// each set of columns as a join would name them: `ben_nir_psa`,
/// `(eta_num, rsa_num)`.
pub fn person_keys(policy: &Policy) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for table in policy.tables.values() {
        if let Some(link) = &table.person_via {
            let key = match link.columns.as_slice() {
                [one] => one.clone(),
                many => format!("({})", many.join(", ")),
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    if keys.is_empty() {
        keys.push(policy.person.column.clone());
    }
    keys
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use seuil_policies::{PolicySource, SNDS_POLICY};

    #[test]
    fn hints_use_the_policys_own_tables_and_keys() {
        let policy = seuil_policies::load(&PolicySource::new("snds.toml", SNDS_POLICY), None)
            .expect("the shipped policy loads")
            .0;
        let data = DataSchema {
            location: "test".into(),
            tables: BTreeMap::from([(
                "ir_ben_r".to_string(),
                vec![
                    ("ben_dcd_dte".to_string(), ColumnType::Temporal),
                    ("ben_res_dpt".to_string(), ColumnType::Text),
                ],
            )]),
            share: false,
        };
        let example = aggregate_example(&policy, &data);
        assert!(example.contains("ben_res_dpt"), "{example}");
        let table = example
            .split(" FROM ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .expect("the example names a table");
        assert_eq!(policy.tables[table].kind, TableKind::Private, "{example}");
        let keys = person_keys(&policy);
        assert!(keys.contains(&"ben_nir_psa".to_string()), "{keys:?}");
        assert!(keys.contains(&"(eta_num, rsa_num)".to_string()), "{keys:?}");
    }
}
