//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::parquet::errors::ParquetError;

/// Why a generation run failed. Every variant names the file or table involved, so that the
/// message alone tells an operator what to fix.
#[derive(thiserror::Error, Debug)]
pub enum SynthError {
    /// The output directory could not be created (for example because a regular file has that name).
    #[error("cannot create output directory {}: {source}", path.display())]
    CreateDir {
        /// The directory that was asked for.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file could not be created, written, synced or renamed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The Parquet encoder refused a batch or could not finish a file.
    #[error("cannot write table {table} as Parquet: {source}")]
    Parquet {
        /// The table being written.
        table: &'static str,
        /// The underlying error.
        source: ParquetError,
    },
    /// An Arrow record batch could not be assembled.
    #[error("cannot build an Arrow batch for table {table}: {source}")]
    Arrow {
        /// The table being built.
        table: &'static str,
        /// The underlying error.
        source: ArrowError,
    },
    /// More persons were asked for than the identifier formats can hold uniquely.
    #[error("cannot generate {persons} persons: at most {max} are supported")]
    TooManyPersons {
        /// The number asked for.
        persons: u64,
        /// The largest supported number.
        max: u64,
    },
    /// A generator thread stopped without producing its chunk (it panicked).
    #[error("a generator thread stopped unexpectedly")]
    WorkerFailed,
}
