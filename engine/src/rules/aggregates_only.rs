//! Rule 1, aggregates only.
//!
//! > A result built from private tables is released only as aggregates. A
//! > query whose output rows are not aggregated across persons is refused
//! > before it runs, with an error that says so and suggests a GROUP BY.
//!
//! After the rewrite, the root of the plan must be public or made of released
//! cells. A root that still holds persons' rows is refused; when one of its
//! columns is an identifier, the message says so too, since a GROUP BY on
//! that column would not help.

use crate::error::place_of_column;
use seuil_policies::Policy;

use crate::catalog::DataCatalog;
use crate::error::{EngineError, Refusal, Rule};
use crate::hints;
use crate::lineage::{Node, Privacy, output_column};

/// Refuses a result that would release persons' rows.
pub fn check_root(root: &Node, policy: &Policy, data: &DataCatalog) -> Result<(), EngineError> {
    let Privacy::Private(lineage) = &root.privacy else {
        return Ok(());
    };
    let schema = root.plan.schema();
    let identifier = (0..schema.fields().len())
        .map(|i| output_column(schema, i))
        .find(|column| lineage.is_identifier(column));
    let mut refusal = Refusal::new(
        Rule::AggregatesOnly,
        "the result would release rows of private tables (one row per person or per event), not aggregates across persons",
        format!(
            "aggregate with GROUP BY on describing columns, for example {}; a GROUP BY on a person key is per person and needs an outer aggregate",
            hints::aggregate_example(policy, &data.data_schema())
        ),
    );
    if let Some(column) = identifier {
        refusal.message.push_str(&format!(
            ", and column {} is an identifier, which is never released (rule 4)",
            column.name
        ));
        refusal = refusal.at(place_of_column(&column));
    }
    Err(EngineError::Refused(refusal))
}
