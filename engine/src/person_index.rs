//! The person index: each private table once joined to its person, kept on
//! disk, so that queries do not join it again.
//!
//! Rule 3 traces every private row to its person along the policy's path
//! (`er_prs_f -> ir_ben_r`, `t_mco_b -> t_mco_c -> ir_ben_r`). Done in each
//! query, that is a hash join over string identifiers under every scan: on a
//! million persons, 23 million claims joined to their persons for every
//! query on `er_prs_f`, 0.9 s of a query that takes 0.1 s without the
//! policy. The index does the join once, when the engine opens: every private
//! table is written again with one more column, [`PERSON_NUMBER`], a dense
//! `UInt32` number of the row's person (`ben_nir_ano`, not the source id, so
//! that a person with two `ben_nir_psa` has one number). Scans then read that
//! column instead of joining, and persons are counted and grouped on a small
//! integer instead of a string.
//!
//! What a keyed table holds is exactly what the lineage join gives: the rows
//! of the table that reach a person (an inner join along the path, as the
//! rewrite would build it without an index), each with its person. The
//! numbers follow the sorted person identifiers, so the same data always
//! gets the same numbers, whoever builds its index.
//!
//! The index lives in a folder named after what it was built from: the size
//! and modification time of every private table's file, and the policy's
//! person and paths. A change of data or of lineage gives another name, so a
//! stale index is never read. A build writes into a private folder and
//! renames it into place once complete, so engines opening the same data at
//! the same time never see half an index; the loser of such a race discards
//! its copy. Indexes of data files that no longer exist, or in an older
//! format, are removed when a new one is built.
//!
//! Row filters of a role (rule 8) on the tables of a path still apply: a scan
//! whose path crosses a filtered table joins along the path as before,
//! taking the person number from the keyed person table
//! ([`crate::rules::person_lineage`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{DataType, UInt32Type};
use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::common::{Column, JoinType, TableReference};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, cast, col};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use datafusion::prelude::{Expr, ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use seuil_policies::{Policy, TableKind};
use sha2::{Digest, Sha256};

use crate::catalog::{DataCatalog, FileTable, IndexOpening, PersonIndex};
use crate::error::EngineError;
use crate::options::{EngineOptions, PersonIndexSetting};
use crate::rules::person_lineage::ScanRewrite;

pub use crate::lineage::PERSON_NUMBER;

/// Bumped whenever what a keyed table holds changes, so that older indexes
/// are rebuilt rather than misread (3: rows sorted by person).
const FORMAT_VERSION: &str = "seuil person index 3";

/// Written last into a complete index, before it is renamed into place.
const MANIFEST: &str = "manifest.json";

/// Builds older than this that never completed (a crashed process) are
/// removed by the next build.
const ABANDONED_BUILD_AGE: Duration = Duration::from_secs(24 * 3600);

/// `data` with its person index for `policy` attached, where the options
/// put it. An index that cannot be built (a read-only folder, tables that
/// are not files) is not an error: the engine then traces persons by
/// joins, which gives the same results more slowly, and says so in the log.
pub async fn attach(policy: &Policy, data: DataCatalog, options: &EngineOptions) -> DataCatalog {
    let root = match &options.person_index {
        PersonIndexSetting::Off => return data,
        PersonIndexSetting::InDataFolder => data.location.join(".seuil-index"),
        PersonIndexSetting::Folder(folder) => folder.clone(),
    };
    match PersonIndex::open_or_build(policy, &data, &root).await {
        // How long a build took is for the caller to tell
        // (`PersonIndex::opening`): the CLI prints it.
        Ok(index) => data.with_person_index(index),
        Err(error) => {
            tracing::warn!(
                %error,
                "no person index: queries join each private table to its persons"
            );
            data
        }
    }
}

impl PersonIndex {
    /// True when the index was built for the person and paths of `policy`.
    pub fn serves(&self, policy: &Policy) -> bool {
        self.lineage == lineage_signature(policy)
    }

    /// Opens the index of `data` for `policy` under `root`, building it
    /// first when there is none for this data and lineage.
    pub async fn open_or_build(
        policy: &Policy,
        data: &DataCatalog,
        root: &Path,
    ) -> Result<PersonIndex, EngineError> {
        let lineage = lineage_signature(policy);
        let data_part = data_signature(policy, data)?;
        let name = format!("{data_part}-{}", &lineage[..16]);
        let folder = root.join(&name);
        let mut opening = IndexOpening::Reused;
        if !folder.join(MANIFEST).is_file() {
            tracing::info!(
                folder = %folder.display(),
                "building the person index of this data (once; later opens reuse it)"
            );
            let started = Instant::now();
            private_folder(root, true).map_err(|e| setup(root, "create", &e))?;
            remove_abandoned_builds(root);
            let partial = root.join(format!(
                ".build-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
            ));
            private_folder(&partial, false).map_err(|e| setup(&partial, "create", &e))?;
            let built = build(policy, data, &partial, &lineage).await;
            if let Err(error) = built {
                let _ = fs::remove_dir_all(&partial);
                return Err(error);
            }
            if fs::rename(&partial, &folder).is_err() {
                // Another engine published the same index first: use theirs.
                let _ = fs::remove_dir_all(&partial);
                if !folder.join(MANIFEST).is_file() {
                    return Err(EngineError::Setup(format!(
                        "cannot publish the person index in {}",
                        folder.display()
                    )));
                }
            }
            remove_stale_indexes(root, &data_part, &name);
            opening = IndexOpening::Built(started.elapsed());
        }
        let tables = open_keyed(policy, data, &folder).await?;
        Ok(PersonIndex {
            folder,
            lineage,
            tables,
            opening,
        })
    }
}

/// Creates a folder only its owner can read: the keyed tables are copies of
/// health data, and must not be more readable than the data because the
/// process's umask is lax.
fn private_folder(path: &Path, with_parents: bool) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(with_parents);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

fn setup(path: &Path, action: &str, error: &std::io::Error) -> EngineError {
    EngineError::Setup(format!(
        "cannot {action} {} for the person index: {error}",
        path.display()
    ))
}

fn df(e: datafusion::error::DataFusionError) -> EngineError {
    EngineError::Setup(format!("cannot build the person index: {e}"))
}

/// The private tables of the policy that the data holds.
fn private_tables<'a>(policy: &'a Policy, data: &DataCatalog) -> Vec<&'a str> {
    policy
        .tables
        .values()
        .filter(|t| t.kind == TableKind::Private && data.table(&t.name).is_some())
        .map(|t| t.name.as_str())
        .collect()
}

/// A digest of what decides the person of a row: the person column and
/// every private table's path to it.
fn lineage_signature(policy: &Policy) -> String {
    let mut digest = Sha256::new();
    digest.update(FORMAT_VERSION);
    digest.update(format!(
        "\0{}\0{}",
        policy.person.table, policy.person.column
    ));
    for table in policy.tables.values() {
        if table.kind != TableKind::Private {
            continue;
        }
        digest.update(format!("\0{}", table.name));
        for link in policy.path_to_person(&table.name) {
            digest.update(format!(
                "\0{}:{}:{}",
                link.table,
                link.columns.join(","),
                link.references.join(",")
            ));
        }
    }
    hex(&digest.finalize())
}

/// A digest of the files of the private tables: name, size and modification
/// time, so that any rewrite of the data gives another index.
fn data_signature(policy: &Policy, data: &DataCatalog) -> Result<String, EngineError> {
    let mut digest = Sha256::new();
    for table in private_tables(policy, data) {
        let file = data.file(table).ok_or_else(|| {
            EngineError::Setup(format!(
                "the person index needs the tables as files; {table} is not one"
            ))
        })?;
        let metadata = fs::metadata(file).map_err(|e| setup(file, "read", &e))?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        digest.update(format!(
            "\0{table}\0{}\0{}",
            metadata.len(),
            modified.as_nanos()
        ));
    }
    Ok(hex(&digest.finalize())[..16].to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes every keyed table into `folder`, the person table first (the
/// others take their person numbers from it), then the manifest.
async fn build(
    policy: &Policy,
    data: &DataCatalog,
    folder: &Path,
    lineage: &str,
) -> Result<(), EngineError> {
    // The private tables are written sorted by person number, so that each
    // person's rows are together and in order: the per-person sums of a
    // query then come in runs ([`crate::functions::person_sums`]), and
    // Parquet stores the number in a few bits per row. One partition, so
    // that rows come in the order of their source and a rebuild of the same
    // data gives the same file.
    let options = EngineOptions {
        target_partitions: Some(1),
        ..EngineOptions::default()
    };
    let ctx = crate::session::standalone_context(&options);
    let person_table = policy.person.table.as_str();
    let person_plan = numbered_persons(policy, data)?;
    write_table(
        &ctx,
        person_plan,
        &folder.join(format!("{person_table}.parquet")),
    )
    .await?;

    let keyed_persons = open_table(&ctx, person_table, folder).await?;
    let with_persons = data.with_person_index(PersonIndex {
        folder: folder.to_path_buf(),
        lineage: lineage.to_string(),
        tables: BTreeMap::from([(person_table.to_string(), keyed_persons)]),
        opening: IndexOpening::Reused,
    });
    let no_filters = BTreeMap::new();
    let lineage_join = ScanRewrite {
        policy,
        data: &with_persons,
        row_filters: &no_filters,
    };
    let mut rows = BTreeMap::new();
    for table in private_tables(policy, data) {
        if table == person_table {
            continue;
        }
        let (builder, person, base) = lineage_join.rows_with_person(table)?;
        let schema = data
            .schema(table)
            .ok_or_else(|| EngineError::Setup(format!("table {table} not found")))?;
        let mut columns: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| Expr::Column(Column::new(Some(base.clone()), f.name())))
            .collect();
        columns.push(Expr::Column(person).alias(PERSON_NUMBER));
        let plan = builder.project(columns).map_err(df)?.build().map_err(df)?;
        let written =
            write_sorted_by_person(&ctx, plan, &folder.join(format!("{table}.parquet"))).await?;
        rows.insert(table.to_string(), written);
    }
    let manifest = serde_json::json!({
        "format": FORMAT_VERSION,
        "source": data.location.display().to_string(),
        "lineage": lineage,
        "rows": rows,
    });
    let manifest_path = folder.join(MANIFEST);
    fs::write(&manifest_path, manifest.to_string())
        .map_err(|e| setup(&manifest_path, "write", &e))?;
    Ok(())
}

/// The person table with the number of each row's person: persons are
/// numbered 1, 2, ... in the order of their identifiers. A row without a
/// person keeps a null number, as it keeps a null identifier.
fn numbered_persons(policy: &Policy, data: &DataCatalog) -> Result<LogicalPlan, EngineError> {
    let table = policy.person.table.as_str();
    let provider = data.table(table).ok_or_else(|| {
        EngineError::Setup(format!("the person table {table} is not in the data"))
    })?;
    let rows = TableReference::bare("__seuil_rows");
    let identifiers = TableReference::bare("__seuil_identifiers");
    let persons = TableReference::bare("__seuil_persons");
    let identifier = Column::new(Some(identifiers.clone()), &policy.person.column);
    let numbered = LogicalPlanBuilder::scan(
        identifiers.clone(),
        provider_as_source(Arc::clone(provider)),
        None,
    )
    .map_err(df)?
    .filter(col(identifier.clone()).is_not_null())
    .map_err(df)?
    .aggregate(vec![col(identifier.clone())], Vec::<Expr>::new())
    .map_err(df)?
    .window(vec![
        row_number()
            .order_by(vec![col(identifier.clone()).sort(true, false)])
            .build()
            .map_err(df)?
            .alias("__seuil_rank"),
    ])
    .map_err(df)?
    .project(vec![
        col(identifier),
        cast(col("__seuil_rank"), DataType::UInt32).alias(PERSON_NUMBER),
    ])
    .map_err(df)?
    .alias(persons.clone())
    .map_err(df)?
    .build()
    .map_err(df)?;
    let person_of_row = Column::new(Some(rows.clone()), &policy.person.column);
    let person = Column::new(Some(persons.clone()), &policy.person.column);
    let mut columns: Vec<Expr> = provider
        .schema()
        .fields()
        .iter()
        .map(|f| Expr::Column(Column::new(Some(rows.clone()), f.name())))
        .collect();
    columns.push(Expr::Column(Column::new(Some(persons), PERSON_NUMBER)));
    LogicalPlanBuilder::scan(rows, provider_as_source(Arc::clone(provider)), None)
        .map_err(df)?
        .join(
            numbered,
            JoinType::Left,
            (vec![person_of_row], vec![person]),
            None,
        )
        .map_err(df)?
        .project(columns)
        .map_err(df)?
        .build()
        .map_err(df)
}

/// Writer settings of the keyed tables: those of the generated data
/// (`seuil gen`), so that a keyed table reads as fast as its source.
fn writer_properties() -> Result<WriterProperties, EngineError> {
    let level = ZstdLevel::try_new(1)
        .map_err(|e| EngineError::Setup(format!("cannot set up the person index writer: {e}")))?;
    // The person numbers come in runs (a person's claims are consecutive in
    // the generated data, and the person table is in person order): deltas
    // store them in a few bits per row and decode without a dictionary.
    let person_number = ColumnPath::from(PERSON_NUMBER);
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_dictionary_enabled(person_number.clone(), false)
        .set_column_encoding(person_number, Encoding::DELTA_BINARY_PACKED)
        .build())
}

/// Rows per batch written, one row group each.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Runs `plan` and writes its rows to `path` sorted by person number (rows
/// without a person last), each person's rows in the order the plan gave
/// them; returns the number of rows.
///
/// A stable sort of the row positions by person, then the rows taken in
/// that order from the batches, a row group at a time: DataFusion's sort is
/// not stable, and breaking its ties with a row number made the index's
/// build three times slower.
async fn write_sorted_by_person(
    ctx: &SessionContext,
    plan: LogicalPlan,
    path: &Path,
) -> Result<u64, EngineError> {
    let cannot = |e: &dyn std::fmt::Display| {
        EngineError::Setup(format!("cannot write {}: {e}", path.display()))
    };
    let frame = ctx.execute_logical_plan(plan).await.map_err(df)?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(df)?;
    let position = schema
        .index_of(PERSON_NUMBER)
        .map_err(|_| EngineError::internal("a keyed table without its person number"))?;
    // (batch, row) of every row, by person: the rows are taken from the
    // batches where they are, without concatenating them first.
    let persons = batches
        .iter()
        .map(|batch| {
            batch
                .column(position)
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| EngineError::internal("a person number that is not a UInt32"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = u32::try_from(persons.iter().map(|p| p.len()).sum::<usize>())
        .map_err(|_| cannot(&"more than 4 billion rows in one table"))?;
    // Person numbers are dense (1 to the number of persons): a counting
    // sort, stable and linear. A row's bucket is its person number; rows
    // without one come after all.
    let last = persons
        .iter()
        .flat_map(|p| p.iter().flatten())
        .max()
        .map_or(0, |n| n as usize);
    let bucket = |persons: &UInt32Array, row: usize| {
        if persons.is_null(row) {
            last + 1
        } else {
            persons.values()[row] as usize
        }
    };
    let mut starts = vec![0usize; last + 3];
    for p in &persons {
        for row in 0..p.len() {
            starts[bucket(p, row) + 1] += 1;
        }
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    // (batch, row) of every row, by person.
    let mut ranked = vec![(0u32, 0u32); count as usize];
    for (b, p) in persons.iter().enumerate() {
        for row in 0..p.len() {
            let at = &mut starts[bucket(p, row)];
            ranked[*at] = (b as u32, row as u32);
            *at += 1;
        }
    }
    let file = fs::File::create(path).map_err(|e| setup(path, "create", &e))?;
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(writer_properties()?))
        .map_err(|e| cannot(&e))?;
    let mut chosen: Vec<(usize, usize)> = Vec::with_capacity(ROW_GROUP_ROWS);
    for chunk in ranked.chunks(ROW_GROUP_ROWS) {
        chosen.clear();
        chosen.extend(chunk.iter().map(|&(b, row)| (b as usize, row as usize)));
        let columns = (0..schema.fields().len())
            .map(|c| {
                let sources: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&sources, &chosen)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cannot(&e))?;
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| cannot(&e))?;
        writer.write(&batch).map_err(|e| cannot(&e))?;
    }
    writer.close().map_err(|e| cannot(&e))?;
    Ok(u64::from(count))
}

/// Runs `plan` and writes its rows to `path`; returns the number of rows.
async fn write_table(
    ctx: &SessionContext,
    plan: LogicalPlan,
    path: &Path,
) -> Result<u64, EngineError> {
    let frame = ctx.execute_logical_plan(plan).await.map_err(df)?;
    let mut stream = frame.execute_stream().await.map_err(df)?;
    let file = fs::File::create(path).map_err(|e| setup(path, "create", &e))?;
    let mut writer = ArrowWriter::try_new(file, stream.schema(), Some(writer_properties()?))
        .map_err(|e| EngineError::Setup(format!("cannot write {}: {e}", path.display())))?;
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await.map_err(df)? {
        rows += batch.num_rows() as u64;
        writer
            .write(&batch)
            .map_err(|e| EngineError::Setup(format!("cannot write {}: {e}", path.display())))?;
    }
    writer
        .close()
        .map_err(|e| EngineError::Setup(format!("cannot write {}: {e}", path.display())))?;
    Ok(rows)
}

async fn open_table(
    ctx: &SessionContext,
    table: &str,
    folder: &Path,
) -> Result<Arc<dyn TableProvider>, EngineError> {
    let path = folder.join(format!("{table}.parquet"));
    let text = path
        .to_str()
        .ok_or_else(|| EngineError::Setup(format!("{} is not a UTF-8 path", path.display())))?;
    let name = format!("__seuil_keyed_{table}");
    ctx.register_parquet(&name, text, ParquetReadOptions::default())
        .await
        .map_err(|e| EngineError::Setup(format!("cannot open {}: {e}", path.display())))?;
    let provider = ctx
        .table_provider(name.as_str())
        .await
        .map_err(|e| EngineError::Setup(format!("cannot open {}: {e}", path.display())))?;
    Ok(FileTable::wrap(&path, provider))
}

/// Opens the keyed tables of a complete index and checks that each is its
/// source table plus the person number.
async fn open_keyed(
    policy: &Policy,
    data: &DataCatalog,
    folder: &Path,
) -> Result<BTreeMap<String, Arc<dyn TableProvider>>, EngineError> {
    let ctx = crate::session::standalone_context(&EngineOptions::default());
    let mut tables = BTreeMap::new();
    for table in private_tables(policy, data) {
        let keyed = open_table(&ctx, table, folder).await?;
        let source = data
            .schema(table)
            .ok_or_else(|| EngineError::Setup(format!("table {table} not found")))?;
        let keyed_schema = keyed.schema();
        let same_columns = keyed_schema.fields().len() == source.fields().len() + 1
            && source
                .fields()
                .iter()
                .zip(keyed_schema.fields().iter())
                .all(|(s, k)| s.name() == k.name() && s.data_type() == k.data_type())
            && keyed_schema
                .field_with_name(PERSON_NUMBER)
                .is_ok_and(|f| f.data_type() == &DataType::UInt32);
        if !same_columns {
            return Err(EngineError::Setup(format!(
                "the person index in {} does not match table {table}; remove the folder to rebuild it",
                folder.display()
            )));
        }
        tables.insert(table.to_string(), keyed);
    }
    Ok(tables)
}

/// Removes the partial folders of builds that never completed.
fn remove_abandoned_builds(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let abandoned = entry.file_name().to_string_lossy().starts_with(".build-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > ABANDONED_BUILD_AGE);
        if abandoned {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the indexes of data files that are gone (another data signature)
/// and those an older seuil wrote (another format). Indexes of the same data
/// for another policy stay: an engine with that policy may be using them.
fn remove_stale_indexes(root: &Path, data_part: &str, current: &str) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let manifest = entry.path().join(MANIFEST);
        if name.starts_with('.') || name == current || !manifest.is_file() {
            continue;
        }
        let same_format = fs::read_to_string(&manifest)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|m| m["format"] == FORMAT_VERSION);
        if !same_format || !name.starts_with(&format!("{data_part}-")) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
