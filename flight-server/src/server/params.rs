//! Query parameters as clients send them.
//!
//! DB-API clients (ADBC's and `flightsql-dbapi`'s) write parameters as `?`
//! (the `qmark` style), while DataFusion numbers them `$1`, `$2`, ... So `?`
//! placeholders are numbered before the SQL reaches the engine, found with
//! the SQL tokenizer so that a `?` inside a string, a quoted name or a
//! comment is left alone.
//!
//! Values arrive by `DoPut` as one Arrow row, typed as the client likes
//! (`flightsql-dbapi` even wraps each in a union): they are unwrapped and
//! cast to the types the engine inferred for the parameters.

use crate::server::status::ServerError;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tonic::Status;

/// Numbers the `?` placeholders of `sql` as `$1`, `$2`, ... Returns the SQL
/// unchanged when it has none or cannot be tokenized (the engine then
/// reports the syntax error on the text the user wrote).
pub fn number_question_marks(sql: &str) -> String {
    if !sql.contains('?') {
        return sql.to_string();
    }
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let places: Vec<(u64, u64)> = tokens
        .iter()
        .filter(|t| matches!(&t.token, Token::Placeholder(p) if p == "?"))
        .map(|t| (t.span.start.line, t.span.start.column))
        .collect();
    if places.is_empty() {
        return sql.to_string();
    }
    // Walk the text as the tokenizer does (lines and columns of characters)
    // to find the byte offset of each placeholder.
    let mut offsets = Vec::with_capacity(places.len());
    let (mut line, mut column) = (1u64, 1u64);
    let mut next = places.iter().peekable();
    for (offset, ch) in sql.char_indices() {
        if next.peek() == Some(&&(line, column)) {
            if ch != '?' {
                return sql.to_string();
            }
            offsets.push(offset);
            next.next();
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    if offsets.len() != places.len() {
        return sql.to_string();
    }
    let mut numbered = String::with_capacity(sql.len() + 2 * offsets.len());
    let mut copied = 0;
    for (i, offset) in offsets.into_iter().enumerate() {
        numbered.push_str(&sql[copied..offset]);
        numbered.push_str(&format!("${}", i + 1));
        copied = offset + 1;
    }
    numbered.push_str(&sql[copied..]);
    numbered
}

/// The parameter values of the one row in `batches`, in the order and types
/// of `expected`.
pub fn bind(batches: &[RecordBatch], expected: &Schema) -> Result<Vec<ScalarValue>, Status> {
    if expected.fields().is_empty() && batches.iter().all(|b| b.num_columns() == 0) {
        return Ok(Vec::new());
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Err(Status::from(ServerError::BadRequest(
            "no parameter values were sent: bind one row with a value for each parameter".into(),
        )));
    };
    if rows > 1 {
        return Err(Status::from(ServerError::BadRequest(format!(
            "{rows} rows of parameters were sent; seuil runs a query with one row of parameters at a time"
        ))));
    }
    if batch.num_columns() != expected.fields().len() {
        return Err(Status::from(ServerError::BadRequest(format!(
            "the query has {} parameters but {} values were sent",
            expected.fields().len(),
            batch.num_columns()
        ))));
    }
    batch
        .columns()
        .iter()
        .zip(expected.fields())
        .enumerate()
        .map(|(i, (column, field))| {
            let value = ScalarValue::try_from_array(column, 0).map_err(|_| {
                Status::from(ServerError::BadRequest(format!(
                    "parameter {} cannot be read",
                    i + 1
                )))
            })?;
            conform(unwrap_union(value), field.data_type()).map_err(|message| {
                Status::from(ServerError::BadRequest(format!(
                    "parameter {}: {message}",
                    i + 1
                )))
            })
        })
        .collect()
}

fn unwrap_union(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Union(Some((_, inner)), _, _) => unwrap_union(*inner),
        ScalarValue::Union(None, _, _) => ScalarValue::Null,
        other => other,
    }
}

/// Casts a value to the parameter's inferred type, when there is one.
fn conform(value: ScalarValue, expected: &DataType) -> Result<ScalarValue, String> {
    if *expected == DataType::Null || value.data_type() == *expected {
        return Ok(value);
    }
    let given = value.data_type();
    value
        .cast_to(expected)
        .map_err(|_| format!("a value of type {given} cannot be used where {expected} is expected"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    use super::*;

    #[test]
    fn question_marks_are_numbered_outside_strings_names_and_comments() {
        assert_eq!(
            number_question_marks("SELECT '?' AS \"a?\", x FROM t WHERE a > ? AND b = ? -- why?"),
            "SELECT '?' AS \"a?\", x FROM t WHERE a > $1 AND b = $2 -- why?"
        );
        assert_eq!(
            number_question_marks("SELECT 'é'\nFROM t WHERE a = ?"),
            "SELECT 'é'\nFROM t WHERE a = $1"
        );
        assert_eq!(number_question_marks("SELECT $1"), "SELECT $1");
        assert_eq!(
            number_question_marks("SELECT 'unclosed ?"),
            "SELECT 'unclosed ?"
        );
    }

    #[test]
    fn one_row_binds_and_is_cast_to_the_inferred_types() {
        let expected = Schema::new(vec![
            Field::new("1", DataType::Int16, true),
            Field::new("2", DataType::Null, true),
        ]);
        let batch = RecordBatch::try_from_iter(vec![
            ("0", Arc::new(Int64Array::from(vec![1980])) as ArrayRef),
            ("1", Arc::new(StringArray::from(vec!["075"])) as ArrayRef),
        ])
        .unwrap();
        let values = bind(&[batch], &expected).unwrap();
        assert_eq!(
            values,
            vec![
                ScalarValue::Int16(Some(1980)),
                ScalarValue::Utf8(Some("075".into()))
            ]
        );
    }

    #[test]
    fn wrong_shapes_are_invalid_arguments() {
        let expected = Schema::new(vec![Field::new("1", DataType::Int16, true)]);
        let two_rows = RecordBatch::try_from_iter(vec![(
            "0",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        let text = RecordBatch::try_from_iter(vec![(
            "0",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        )])
        .unwrap();
        for batches in [vec![], vec![two_rows], vec![text]] {
            let status = bind(&batches, &expected).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }
}
