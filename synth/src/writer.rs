//! One Parquet file per table, written under a temporary name and renamed only once complete.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::{SynthError, TableSummary};

/// Rows per row group: small enough for row-group pruning on the larger tables, large enough to
/// keep per-group overhead low. Fixed, like every writer property, so output is reproducible.
const MAX_ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writer properties shared by every table. `created_by` is pinned so that the bytes of a file
/// depend only on its contents (no library version, no timestamp).
fn writer_properties(table: &'static str) -> Result<WriterProperties, SynthError> {
    // ZSTD level 1: compresses about as fast as Snappy, noticeably smaller files.
    let level = ZstdLevel::try_new(1).map_err(|source| SynthError::Parquet { table, source })?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(concat!("seuil-synth ", env!("CARGO_PKG_VERSION")).to_owned())
        .build())
}

/// An open table file.
pub(crate) struct TableWriter {
    table: &'static str,
    final_path: PathBuf,
    partial_path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
    published: bool,
}

impl TableWriter {
    /// Opens `<dir>/.<table>.parquet.partial` for writing.
    pub(crate) fn create(
        dir: &Path,
        table: &'static str,
        schema: SchemaRef,
    ) -> Result<Self, SynthError> {
        let final_path = dir.join(format!("{table}.parquet"));
        let partial_path = dir.join(format!(".{table}.parquet.partial"));
        let file = File::create(&partial_path).map_err(|source| SynthError::Io {
            path: partial_path.clone(),
            source,
        })?;
        let writer = ArrowWriter::try_new(file, schema, Some(writer_properties(table)?))
            .map_err(|source| SynthError::Parquet { table, source })?;
        Ok(TableWriter {
            table,
            final_path,
            partial_path,
            writer: Some(writer),
            rows: 0,
            published: false,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), SynthError> {
        let table = self.table;
        let writer = self.writer.as_mut().ok_or_else(|| SynthError::Parquet {
            table,
            source: datafusion::parquet::errors::ParquetError::General(
                "writer already closed".to_owned(),
            ),
        })?;
        writer
            .write(batch)
            .map_err(|source| SynthError::Parquet { table, source })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Writes the footer and syncs the temporary file; the table is not visible yet.
    pub(crate) fn finish(&mut self) -> Result<(), SynthError> {
        let table = self.table;
        if let Some(writer) = self.writer.take() {
            let file = writer
                .into_inner()
                .map_err(|source| SynthError::Parquet { table, source })?;
            file.sync_all().map_err(|source| SynthError::Io {
                path: self.partial_path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Moves the finished file to its real name, replacing any previous table.
    pub(crate) fn publish(mut self) -> Result<TableSummary, SynthError> {
        fs::rename(&self.partial_path, &self.final_path).map_err(|source| SynthError::Io {
            path: self.final_path.clone(),
            source,
        })?;
        self.published = true;
        Ok(TableSummary {
            name: self.table,
            rows: self.rows,
            path: self.final_path.clone(),
        })
    }
}

impl Drop for TableWriter {
    /// A table that was never published is removed, so that a failed run leaves no partial file
    /// behind; best effort, since the error that stopped the run matters more.
    fn drop(&mut self) {
        if !self.published {
            self.writer = None;
            let _ = fs::remove_file(&self.partial_path);
        }
    }
}
