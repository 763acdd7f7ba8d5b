//! # seuil-policies: the rules seuil enforces, as policy authors write them
//!
//! A policy is a TOML rule file (the shipped one is `policies/snds.toml`). It
//! says who the protected **person** is, how every **private table** reaches
//! that person through foreign keys (`person_via`), what each **column** may be
//! used for (`identifier`, `quasi_identifier`, `sensitive` with bounds,
//! `public`), and, per **role**, the release mode (`threshold` or `dp`), the
//! minimum number of persons per cell, dominance and rounding, and the tables,
//! columns and row filters the role's project was approved for.
//!
//! This crate parses and validates rule files and nothing else: it knows no
//! query execution. [`check`] turns text into a validated [`Policy`] and reports
//! every problem as a [`Diagnostic`] with its byte span, which
//! [`Diagnostic::render`] prints as `file:line:column: error: message`. Given a
//! [`DataSchema`] (read from the data by the caller), it also checks that every
//! table and column of the policy exists in the data. [`json_schema`] gives the
//! JSON Schema of the format, for editors.
//!
//! Users are not policy: which user has which role is server configuration.
//!
//! ```
//! use seuil_policies::{check, PolicySource};
//!
//! let source = PolicySource::new("tiny.toml", r#"
//! [policy]
//! name = "tiny"
//! version = "1"
//!
//! [person]
//! table = "patients"
//! column = "patient_id"
//!
//! [tables.patients]
//! kind = "private"
//! columns.patient_id = { class = "identifier" }
//! columns.age = { class = "quasi_identifier" }
//!
//! [roles.researcher]
//! min_persons = 11
//! tables.patients = {}
//! "#);
//! let (policy, diagnostics) = check(&source, None);
//! assert!(!diagnostics.has_errors(), "{}", diagnostics.render(&source));
//! let policy = policy.unwrap();
//! assert_eq!(policy.roles["researcher"].min_persons, 11);
//! assert_eq!(policy.person_keys("patients"), vec![vec!["patient_id".to_string()]]);
//! ```

mod data_schema;
mod diagnostics;
mod model;
pub mod raw;
mod validate;

pub use data_schema::{ColumnType, DataSchema};
pub use diagnostics::{Diagnostic, Diagnostics, PolicyError, PolicySource, Severity};
pub use model::*;
pub use validate::{check, load};

/// The JSON Schema of the rule-file format, generated from the types serde
/// reads, so that it cannot drift from what [`check`] accepts.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::RawPolicy);
    schema.to_value()
}

/// The shipped SNDS policy (`policies/snds.toml`), embedded so that the demo
/// runs from any directory.
pub const SNDS_POLICY: &str = include_str!("../snds.toml");
