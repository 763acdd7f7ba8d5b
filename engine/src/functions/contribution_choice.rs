//! `seuil_contribution_choice(person, g1, g2, ...)`: a keyed hash of a
//! person and a cell, by which dp mode chooses the cells a person counts in
//! when they are in more than `max_groups_per_person` of them.
//!
//! The choice must not depend on anything the querier controls or can
//! predict, or a querier could steer one person's contribution into the
//! cells they watch: so it is a pseudo-random function under a secret key
//! of the deployment, which never appears in a plan (the key lives in the
//! function registered in each session, not in an argument). The same
//! person and cell always get the same value under one key, so the choice
//! does not depend on partitions, batches or threads either.
//!
//! The function is SipHash-2-4, a keyed pseudo-random function made for
//! short inputs, under a 128-bit key derived from the deployment's secret
//! by HMAC-SHA256. It is computed for every (person, cell) of a person with
//! more cells than it keeps, some ten million on a million persons' claims:
//! HMAC-SHA256 itself (two SHA-256 blocks per pair) took a quarter of such
//! a dp query (`seuil-bench dp`), SipHash a few percent.
//!
//! Values are encoded with Arrow's row format before hashing, which is
//! injective for a given list of types: two different (person, cell) pairs
//! never hash the same input. The row format of several columns is their
//! encodings one after the other, so a pass that already holds the
//! person's and the cell's encodings hashes them as they are
//! ([`ContributionChoice::of_encoded`]), with the same value as the
//! function over the columns.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt64Builder};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// The function's name in plans.
pub const NAME: &str = "seuil_contribution_choice";

/// The keyed hash of a person and a cell.
#[derive(Clone)]
pub struct ContributionChoice {
    signature: Signature,
    key: [u8; 32],
    /// SipHash's key, derived from `key`.
    sip_key: [u8; 16],
}

impl ContributionChoice {
    /// The hash of a (person, cell) from their Arrow row encodings, as the
    /// function gives it over the person's column and the cell's columns.
    pub fn of_encoded(&self, person: &[u8], cell: &[u8]) -> u64 {
        let mut hasher = SipHasher24::new_with_key(&self.sip_key);
        hasher.write(person);
        hasher.write(cell);
        hasher.finish()
    }

    /// The function under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        derive.update(b"seuil contribution choice");
        let mut sip_key = [0u8; 16];
        sip_key.copy_from_slice(&derive.finalize().into_bytes()[..16]);
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
            key,
            sip_key,
        }
    }
}

impl std::fmt::Debug for ContributionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret of the deployment: never printed.
        f.debug_struct("ContributionChoice").finish_non_exhaustive()
    }
}

impl PartialEq for ContributionChoice {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ContributionChoice {}

impl std::hash::Hash for ContributionChoice {
    fn hash<H: Hasher>(&self, state: &mut H) {
        NAME.hash(state);
    }
}

impl ScalarUDFImpl for ContributionChoice {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if args.args.is_empty() {
            return exec_err!("{NAME} needs a person");
        }
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<_>>()?;
        let fields = arrays
            .iter()
            .map(|a| SortField::new(a.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let encoded = converter.convert_columns(&arrays)?;
        let mut out = UInt64Builder::with_capacity(rows);
        for row in encoded.iter() {
            out.append_value(self.of_encoded(row.as_ref(), &[]));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// A call of the function registered under `key`, over `person` and the
/// cell's group expressions.
pub fn contribution_choice(key: [u8; 32], person: Expr, groups: Vec<Expr>) -> Expr {
    let mut args = vec![person];
    args.extend(groups);
    ScalarUDF::from(ContributionChoice::new(key)).call(args)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray, UInt32Array, UInt64Array};
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    use super::*;

    /// The function under `choice` over a person column and a cell column.
    fn hashes(choice: &ContributionChoice, person: ArrayRef, cell: ArrayRef) -> Vec<u64> {
        let rows = person.len();
        let field = |name: &str, array: &ArrayRef| {
            Arc::new(Field::new(name, array.data_type().clone(), true))
        };
        let args = ScalarFunctionArgs {
            arg_fields: vec![field("p", &person), field("c", &cell)],
            args: vec![ColumnarValue::Array(person), ColumnarValue::Array(cell)],
            number_rows: rows,
            return_field: Arc::new(Field::new("r", DataType::UInt64, false)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let out = choice
            .invoke_with_args(args)
            .unwrap()
            .to_array(rows)
            .unwrap();
        out.as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    fn choose(key: [u8; 32], persons: &[i64], cells: &[&str]) -> Vec<u64> {
        hashes(
            &ContributionChoice::new(key),
            Arc::new(Int64Array::from(persons.to_vec())),
            Arc::new(StringArray::from(cells.to_vec())),
        )
    }

    #[test]
    fn the_same_person_and_cell_hash_the_same_under_one_key_only() {
        let a = choose([1; 32], &[7, 7, 8], &["75", "75", "75"]);
        assert_eq!(a[0], a[1]);
        assert_ne!(a[0], a[2]);
        let b = choose([2; 32], &[7], &["75"]);
        assert_ne!(a[0], b[0], "another key gives another choice");
    }

    #[test]
    fn the_hash_of_encodings_is_the_functions() {
        let persons: ArrayRef = Arc::new(UInt32Array::from(vec![Some(7), None]));
        let cells: ArrayRef = Arc::new(StringArray::from(vec!["75", "13"]));
        let choice = ContributionChoice::new([4; 32]);
        let whole = hashes(&choice, Arc::clone(&persons), Arc::clone(&cells));
        let encode = |array: &ArrayRef| {
            RowConverter::new(vec![SortField::new(array.data_type().clone())])
                .unwrap()
                .convert_columns(std::slice::from_ref(array))
                .unwrap()
        };
        let (persons, cells) = (encode(&persons), encode(&cells));
        for (i, &hash) in whole.iter().enumerate() {
            assert_eq!(
                choice.of_encoded(persons.row(i).as_ref(), cells.row(i).as_ref()),
                hash
            );
        }
    }

    #[test]
    fn values_are_encoded_without_ambiguity() {
        // ("1", "23") and ("12", "3") would collide under plain concatenation.
        let out = hashes(
            &ContributionChoice::new([3; 32]),
            Arc::new(StringArray::from(vec!["1", "12"])),
            Arc::new(StringArray::from(vec!["23", "3"])),
        );
        assert_ne!(out[0], out[1]);
    }
}
