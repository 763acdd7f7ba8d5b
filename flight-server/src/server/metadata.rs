//! What BI tools and drivers ask before they query: `GetSqlInfo`,
//! `GetXdbcTypeInfo`, and the catalog (`GetCatalogs`, `GetDbSchemas`,
//! `GetTables`, `GetTableTypes`), answered from the role's scoped session, so
//! that a table or column outside the role's scope does not exist for its
//! users here either (DESIGN.md §2, rule 8).
//!
//! seuil has one catalog, `seuil`, with the schema `public` (the data) and
//! the views of `information_schema`. It declares no keys: primary, imported
//! and exported keys and cross references answer empty tables of the schemas
//! Flight SQL defines, rather than errors that would stop a BI tool.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
    XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, Nullable, Searchable, SqlInfo,
    SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar,
    XdbcDataType, XdbcDatetimeSubcode,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, INFORMATION_SCHEMA_TABLES};
use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;

/// The one catalog.
pub const CATALOG: &str = "seuil";
/// The schema of the data.
pub const SCHEMA: &str = "public";
/// Type of the data's tables.
const TABLE: &str = "TABLE";
/// Type of the `information_schema` views.
const VIEW: &str = "VIEW";

/// A bitmask with the given bits set.
fn bits(positions: &[i32]) -> i32 {
    positions.iter().fold(0, |mask, p| mask | (1 << p))
}

/// The server's `GetSqlInfo` answers: the set the Flight SQL JDBC driver
/// reads for `DatabaseMetaData`, plus what ADBC and SQLAlchemy ask.
pub fn sql_info(max_sql_bytes: usize) -> Result<SqlInfoData, FlightError> {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "seuil");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (metadata V5).
    info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    info.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    info.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    info.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);

    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    // Unquoted names are folded to lower case; quoted ones are kept as written.
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    info.append(SqlInfo::SqlAllTablesAreSelectable, true);
    // NULLs sort as if larger than any value (last ascending, first descending).
    info.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    info.append(
        SqlInfo::SqlKeywords,
        datafusion::sql::sqlparser::keywords::ALL_KEYWORDS,
    );
    info.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    info.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    info.append(
        SqlInfo::SqlSystemFunctions,
        &["arrow_typeof", "version"][..],
    );
    info.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    info.append(SqlInfo::SqlSearchStringEscape, "\\");
    info.append(SqlInfo::SqlExtraNameCharacters, "");
    info.append(SqlInfo::SqlSupportsColumnAliasing, true);
    info.append(SqlInfo::SqlNullPlusNullIsNull, true);
    info.append(
        SqlInfo::SqlSupportsConvert,
        BTreeMap::<i32, Vec<i32>>::new(),
    );
    info.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    info.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    info.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    info.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    info.append(SqlInfo::SqlSupportedGroupBy, bits(&[0, 1]));
    info.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    info.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    info.append(
        SqlInfo::SqlSupportedGrammar,
        bits(&[
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    info.append(
        SqlInfo::SqlAnsi92SupportedLevel,
        // SupportedAnsi92SqlGrammarLevel::Ansi92EntrySql, which arrow-flight
        // does not export.
        bits(&[0]),
    );
    info.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    info.append(SqlInfo::SqlOuterJoinsSupportLevel, 2i32);
    info.append(SqlInfo::SqlSchemaTerm, "schema");
    info.append(SqlInfo::SqlProcedureTerm, "procedure");
    info.append(SqlInfo::SqlCatalogTerm, "catalog");
    info.append(SqlInfo::SqlCatalogAtStart, true);
    info.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    info.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    info.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    info.append(SqlInfo::SqlSelectForUpdateSupported, false);
    info.append(SqlInfo::SqlStoredProceduresSupported, false);
    // Subqueries in comparisons, EXISTS, IN and quantified comparisons.
    info.append(SqlInfo::SqlSupportedSubqueries, bits(&[0, 1, 2, 3]));
    info.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    info.append(SqlInfo::SqlSupportedUnions, bits(&[0, 1]));
    // Zero: no fixed limit other than the query's length.
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        info.append(limit, 0i64);
    }
    info.append(
        SqlInfo::SqlMaxStatementLength,
        i64::try_from(max_sql_bytes).unwrap_or(i64::MAX),
    );
    info.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
    info.append(SqlInfo::SqlDefaultTransactionIsolation, 0i32);
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    info.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    info.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false);
    // Forward-only, read-only result sets.
    info.append(SqlInfo::SqlSupportedResultSetTypes, bits(&[1]));
    info.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        0i32,
    );
    info.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        bits(&[1]),
    );
    info.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0i32,
    );
    info.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0i32,
    );
    info.append(SqlInfo::SqlBatchUpdatesSupported, false);
    info.append(SqlInfo::SqlSavepointsSupported, false);
    info.append(SqlInfo::SqlNamedParametersSupported, false);
    info.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    info.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    info.build()
}

const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "degrees", "exp", "floor", "ln",
    "log", "log10", "log2", "pi", "power", "radians", "round", "signum", "sin", "sqrt", "tan",
    "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "translate",
    "trim",
    "upper",
];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "make_date",
    "now",
    "to_date",
    "to_timestamp",
];

fn xdbc(name: &str, data_type: XdbcDataType, column_size: Option<i32>) -> XdbcTypeInfo {
    let is_text = matches!(data_type, XdbcDataType::XdbcVarchar);
    let is_number = matches!(
        data_type,
        XdbcDataType::XdbcTinyint
            | XdbcDataType::XdbcSmallint
            | XdbcDataType::XdbcInteger
            | XdbcDataType::XdbcBigint
            | XdbcDataType::XdbcFloat
            | XdbcDataType::XdbcDouble
            | XdbcDataType::XdbcDecimal
    );
    let datetime_subcode = match data_type {
        // DATE shares its code (1) with YEAR in Flight SQL; prost keeps the
        // first name only.
        XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
        XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        _ => None,
    };
    let sql_data_type = if datetime_subcode.is_some() {
        XdbcDataType::XdbcDatetime
    } else {
        data_type
    };
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size,
        literal_prefix: is_text.then(|| "'".to_string()),
        literal_suffix: is_text.then(|| "'".to_string()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: is_text,
        searchable: Searchable::Full,
        unsigned_attribute: is_number.then_some(false),
        fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
        auto_increment: is_number.then_some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type,
        datetime_subcode,
        num_prec_radix: is_number.then_some(10),
        interval_precision: None,
    }
}

/// The SQL types of seuil's data and results, for `GetXdbcTypeInfo`.
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData, FlightError> {
    let mut types = XdbcTypeInfoDataBuilder::new();
    for info in [
        xdbc("BOOLEAN", XdbcDataType::XdbcBit, Some(1)),
        xdbc("TINYINT", XdbcDataType::XdbcTinyint, Some(3)),
        xdbc("SMALLINT", XdbcDataType::XdbcSmallint, Some(5)),
        xdbc("INTEGER", XdbcDataType::XdbcInteger, Some(10)),
        xdbc("BIGINT", XdbcDataType::XdbcBigint, Some(19)),
        xdbc("FLOAT", XdbcDataType::XdbcFloat, Some(7)),
        xdbc("DOUBLE", XdbcDataType::XdbcDouble, Some(15)),
        xdbc("DECIMAL", XdbcDataType::XdbcDecimal, Some(38)),
        xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None),
        xdbc("DATE", XdbcDataType::XdbcDate, Some(10)),
        xdbc("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29)),
    ] {
        types.append(info);
    }
    types.build()
}

/// `GetCatalogs`.
pub fn catalogs() -> Result<RecordBatch, FlightError> {
    let mut builder = GetCatalogsBuilder::new();
    builder.append(CATALOG);
    builder.build()
}

/// `GetDbSchemas`, filtered as asked.
pub fn db_schemas(query: CommandGetDbSchemas) -> Result<RecordBatch, FlightError> {
    let mut builder: GetDbSchemasBuilder = query.into_builder();
    builder.append(CATALOG, SCHEMA);
    builder.append(CATALOG, INFORMATION_SCHEMA);
    builder.build()
}

/// `GetTableTypes`.
pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, FlightError> {
    let mut builder = query.into_builder();
    builder.append(TABLE);
    builder.append(VIEW);
    builder.build()
}

/// The schema of a `GetTables` answer.
pub fn tables_schema(query: &CommandGetTables) -> SchemaRef {
    GetTablesBuilder::new(
        None::<String>,
        None::<String>,
        None::<String>,
        Vec::<String>::new(),
        query.include_schema,
    )
    .schema()
}

/// `GetTables` over the role's scope: its tables in `public`, with only the
/// columns it may see, and the `information_schema` views.
pub async fn tables(
    ctx: &SessionContext,
    query: CommandGetTables,
) -> Result<RecordBatch, FlightError> {
    let mut builder: GetTablesBuilder = query.into_builder();
    let mut found: Vec<(&str, String, &str, SchemaRef)> = Vec::new();
    if let Some(schema) = ctx.catalog(CATALOG).and_then(|c| c.schema(SCHEMA)) {
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            if let Ok(Some(table)) = schema.table(&name).await {
                found.push((SCHEMA, name, TABLE, table.schema()));
            }
        }
    }
    for view in INFORMATION_SCHEMA_TABLES {
        let reference = TableReference::full(CATALOG, INFORMATION_SCHEMA, *view);
        if let Ok(table) = ctx.table_provider(reference).await {
            found.push((
                INFORMATION_SCHEMA,
                (*view).to_string(),
                VIEW,
                table.schema(),
            ));
        }
    }
    for (schema, name, kind, table_schema) in found {
        builder.append(
            CATALOG,
            schema,
            name,
            kind,
            &without_metadata(&table_schema),
        )?;
    }
    builder.build()
}

fn without_metadata(schema: &Schema) -> Schema {
    Schema::new(schema.fields().clone())
}

/// The schema of `GetPrimaryKeys`.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The schema of `GetImportedKeys`, `GetExportedKeys` and
/// `GetCrossReference`.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_answers_build() {
        let info = sql_info(100_000).unwrap();
        let batch = info
            .record_batch([
                SqlInfo::FlightSqlServerName as u32,
                SqlInfo::SqlIdentifierQuoteChar as u32,
            ])
            .unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(
            xdbc_type_info()
                .unwrap()
                .record_batch(None)
                .unwrap()
                .num_rows()
                > 5
        );
        assert_eq!(catalogs().unwrap().num_rows(), 1);
        let schemas = db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("pub%".into()),
        })
        .unwrap();
        assert_eq!(schemas.num_rows(), 1);
    }
}
