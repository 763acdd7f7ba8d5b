//! The audit log (DESIGN.md §2, rule 9): every query, accepted or refused,
//! becomes JSON lines, appended and synced to disk: one when the query is
//! accepted for execution, before anything runs (so that a crash leaves
//! it), and one when it ends (released, refused, failed or timed out), before
//! any of its result leaves the server. The two share a `query_id`.
//!
//! Lines are chained so that tampering shows, and the chain is keyed: each
//! line holds `prev`, the `hash` of the line before it (64 zeros for the
//! first line), and ends with its own `hash`: the HMAC-SHA256, under a key
//! kept apart from the log ([`AuditKey`]), of the line's text without the
//! `hash` field, that is of its exact bytes up to `,"hash":` with the closing
//! brace put back. Hashing the bytes as written means that any change to a
//! line, down to one space, shows; keying the hash means that someone who
//! can edit the log but not read the key cannot delete lines and compute
//! the chain again. Removing, inserting or reordering lines breaks the
//! `prev` of the line that follows. Removing whole lines from the end
//! leaves a shorter valid chain, so the log's head (last hash) is also
//! written to a second file after every line ([`AuditLog::head_path`]) and
//! logged at intervals, and [`verify`] checks that the chain still reaches
//! a head kept elsewhere.
//!
//! Several processes may append to one log (the server and `seuil query`):
//! each append takes an exclusive lock on the file and continues the chain
//! from its last line on disk.
//!
//! The engine writes the lines of the queries it runs through its
//! [`AuditSink`] trait, which [`AuditLog`] implements; the server adds the
//! lines of requests refused before they reach the engine (no query slot,
//! ingest). This module knows nothing of Flight; `seuil audit verify` calls
//! [`verify_file`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use seuil_engine::audit::{AuditSink, AuditUnavailable};
use sha2::Sha256;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Lines between two records of the head in the server's log.
const HEAD_LOG_INTERVAL: u64 = 1_000;

pub use seuil_engine::audit::{AuditRecord, Outcome, new_query_id, sha256_hex};

/// The key of the chain: 256 bits, kept in a file apart from the log,
/// readable by the server's user only.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key for another purpose, derived from this one (HMAC-SHA256 of the
    /// purpose's name): one secret of the deployment, several keys that
    /// tell nothing of each other.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Reads the key in `path` (64 hex digits).
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| AuditError::BadKey(path.display().to_string()))?;
        Ok(Self(bytes))
    }

    /// Reads the key in `path`, or creates it there (a random key, in a
    /// file of mode 0600) when there is none yet.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        if path.exists() {
            return Self::load(path);
        }
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let key: [u8; 32] = rand::random();
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok(Self(key))
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io(e)),
        }
    }

    fn mac(&self, content: &str) -> String {
        // HMAC pads a key shorter than the hash's block with zeros: the
        // padded key gives the same MAC, with no length to get wrong.
        let mut block = [0u8; 64];
        block[..self.0.len()].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(content.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A record with its place in the chain: one line of the log. Unknown
/// fields need no refusing here: any byte added to a line breaks its hash.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    #[serde(flatten)]
    record: AuditRecord,
    prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

/// The text of a line (with its newline) chained after `prev`, and its hash.
fn seal(record: AuditRecord, prev: &str, key: &AuditKey) -> Result<(String, String), AuditError> {
    let unsealed = Line {
        record,
        prev: prev.to_string(),
        hash: None,
    };
    let content =
        serde_json::to_string(&unsealed).map_err(|e| AuditError::Encode(e.to_string()))?;
    let hash = key.mac(&content);
    // `content` ends with the closing brace of the object: the hash goes
    // just before it, so that the line minus the hash is `content` again.
    let body = content.strip_suffix('}').unwrap_or(&content);
    Ok((format!("{body},\"hash\":\"{hash}\"}}\n"), hash))
}

/// Splits a line into the content its hash covers and the stored hash.
fn unseal(line: &str) -> Option<(String, &str)> {
    let (body, tail) = line.rsplit_once(",\"hash\":\"")?;
    let hash = tail.strip_suffix("\"}")?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((format!("{body}}}"), hash))
}

/// Why the log cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing the file failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("the audit key file {0} does not hold 64 hex digits")]
    BadKey(String),
    /// The existing log ends with a line that is not a sealed entry under
    /// the key, so the chain cannot be continued.
    #[error(
        "audit log {path} ends with a damaged line ({problem}); check it with `seuil audit verify {path}` and move it aside"
    )]
    DamagedTail {
        /// The log.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A record could not be encoded.
    #[error("audit record cannot be encoded: {0}")]
    Encode(String),
    /// An earlier write failed: the file may hold a partial line, so nothing
    /// more is written (and no more results are released) until it is
    /// repaired.
    #[error(
        "the audit log could not be written earlier; queries are refused until the server is restarted"
    )]
    Poisoned,
}

struct Writer {
    file: File,
    path: PathBuf,
    key: AuditKey,
    poisoned: bool,
    appended: u64,
}

/// The append-only, keyed, hash-chained audit log. Cheap to clone; appends
/// are serialized (between threads, and between processes by a file lock)
/// so that each line chains to the one before it.
#[derive(Clone)]
pub struct AuditLog {
    writer: Arc<Mutex<Writer>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, chained under `key`; refuses a
    /// log whose last line is damaged or sealed under another key.
    pub fn open(path: &Path, key: AuditKey) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        last_hash(&mut file, path, &key)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Writer {
                file,
                path: path.to_path_buf(),
                key,
                poisoned: false,
                appended: 0,
            })),
        })
    }

    /// Where the head of the log at `path` is written after each line.
    pub fn head_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".head");
        PathBuf::from(name)
    }

    /// The hash of the last line (the chain's head), or [`GENESIS`].
    pub fn head(&self) -> Result<String, AuditError> {
        let mut writer = self.writer.lock().map_err(|_| AuditError::Poisoned)?;
        let Writer {
            file, path, key, ..
        } = &mut *writer;
        last_hash(file, path, key)
    }

    /// Appends a record and syncs it to disk; returns the line's hash. Blocks
    /// on the disk: call it from a blocking thread.
    pub fn append(&self, record: AuditRecord) -> Result<String, AuditError> {
        let mut writer = self.writer.lock().map_err(|_| AuditError::Poisoned)?;
        if writer.poisoned {
            return Err(AuditError::Poisoned);
        }
        let path = writer.path.clone();
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        writer.file.lock().map_err(io)?;
        let appended = Self::append_locked(&mut writer, record);
        writer.file.unlock().map_err(io)?;
        let hash = appended?;
        writer.appended += 1;
        if writer.appended % HEAD_LOG_INTERVAL == 0 {
            tracing::info!(head = %hash, lines = writer.appended, "audit log head");
        }
        Ok(hash)
    }

    fn append_locked(writer: &mut Writer, record: AuditRecord) -> Result<String, AuditError> {
        let prev = {
            let Writer {
                file, path, key, ..
            } = &mut *writer;
            last_hash(file, path, key)?
        };
        let (line, hash) = seal(record, &prev, &writer.key)?;
        let written = writer
            .file
            .write_all(line.as_bytes())
            .and_then(|()| writer.file.sync_data());
        if let Err(source) = written {
            writer.poisoned = true;
            return Err(AuditError::Io {
                path: writer.path.clone(),
                source,
            });
        }
        // The head, apart from the log, so that lines cut from its end show.
        let head_path = Self::head_path(&writer.path);
        let mut temporary = head_path.as_os_str().to_owned();
        temporary.push(".tmp");
        let saved = std::fs::write(&temporary, format!("{hash}\n"))
            .and_then(|()| std::fs::rename(&temporary, &head_path));
        if let Err(error) = saved {
            tracing::warn!(%error, path = %head_path.display(), "cannot write the audit log head");
        }
        Ok(hash)
    }

    /// [`AuditLog::append`] on a blocking thread, for async callers.
    pub async fn append_async(&self, record: AuditRecord) -> Result<String, AuditError> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.append(record))
            .await
            .map_err(|_| AuditError::Poisoned)?
    }
}

#[async_trait::async_trait]
impl AuditSink for AuditLog {
    async fn append(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        self.append_async(record)
            .await
            .map(drop)
            .map_err(|e| AuditUnavailable(e.to_string()))
    }
}

/// Reads the hash of the file's last line, checking that the line is whole
/// and sealed under `key`: a crash mid-write, or a line of another key, must
/// not be silently chained over.
fn last_hash(file: &mut File, path: &Path, key: &AuditKey) -> Result<String, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len == 0 {
        return Ok(GENESIS.to_string());
    }
    // Read backwards in chunks until the start of the last line.
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let chunk = (64 * 1024u64).min(pos);
        pos -= chunk;
        file.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut buf = vec![0; chunk as usize];
        file.read_exact(&mut buf).map_err(io)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if pos == 0 || body.contains(&b'\n') {
            break;
        }
    }
    let damaged = |problem: &str| AuditError::DamagedTail {
        path: path.display().to_string(),
        problem: problem.to_string(),
    };
    let Some(body) = tail.strip_suffix(b"\n") else {
        return Err(damaged("the last line is incomplete"));
    };
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None => body,
    };
    let text = std::str::from_utf8(last).map_err(|_| damaged("the last line is not UTF-8"))?;
    match check_line(text, key) {
        Ok(line) => Ok(line.hash.unwrap_or_default()),
        Err(problem) => Err(damaged(&problem.to_string())),
    }
}

/// What is wrong at one line of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// The line is not a sealed audit entry.
    NotAnEntry(String),
    /// The line's content does not match its hash.
    Edited,
    /// The line does not chain to the line before it.
    Unchained,
    /// The file ends in the middle of a line.
    Truncated,
    /// The chain does not reach the head the caller kept.
    HeadMismatch {
        /// The expected last hash.
        expected: String,
    },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::NotAnEntry(why) => write!(f, "not an audit entry ({why})"),
            ChainProblem::Edited => write!(f, "edited: the line does not match its hash"),
            ChainProblem::Unchained => write!(
                f,
                "does not follow the line before it: a line was removed, inserted or moved before this one"
            ),
            ChainProblem::Truncated => write!(f, "incomplete last line: the log was cut"),
            ChainProblem::HeadMismatch { expected } => write!(
                f,
                "the chain never reaches the head {expected} kept elsewhere: lines were removed from the end"
            ),
        }
    }
}

/// Where a log's chain breaks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// One-based line number.
    pub line: usize,
    /// What is wrong there.
    pub problem: ChainProblem,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

/// A log whose chain is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Number of entries.
    pub entries: usize,
    /// Hash of the last entry ([`GENESIS`] for an empty log).
    pub head: String,
}

fn check_line(text: &str, key: &AuditKey) -> Result<Line, ChainProblem> {
    let line: Line =
        serde_json::from_str(text).map_err(|e| ChainProblem::NotAnEntry(e.to_string()))?;
    let (content, stored) = unseal(text)
        .ok_or_else(|| ChainProblem::NotAnEntry("no hash at the end of the line".into()))?;
    if line.hash.as_deref() != Some(stored) || key.mac(&content) != stored {
        return Err(ChainProblem::Edited);
    }
    Ok(line)
}

/// Checks a whole log: every line sealed under `key`, each chained to the
/// one before, the first to [`GENESIS`], and, when `expected_head` (a head
/// kept elsewhere) is given, the chain reaching it: the log may have grown
/// since, but no line up to it is gone.
pub fn verify(
    log: &[u8],
    key: &AuditKey,
    expected_head: Option<&str>,
) -> Result<Verified, ChainBreak> {
    let mut prev = GENESIS.to_string();
    let mut entries = 0;
    let mut reached = expected_head.is_none_or(|h| h == GENESIS);
    let mut rest = log;
    while !rest.is_empty() {
        let number = entries + 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(ChainBreak {
                line: number,
                problem: ChainProblem::Truncated,
            });
        };
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| ChainBreak {
            line: number,
            problem: ChainProblem::NotAnEntry("not UTF-8".into()),
        })?;
        let line = check_line(text, key).map_err(|problem| ChainBreak {
            line: number,
            problem,
        })?;
        if line.prev != prev {
            return Err(ChainBreak {
                line: number,
                problem: ChainProblem::Unchained,
            });
        }
        prev = line.hash.unwrap_or_default();
        reached |= expected_head == Some(prev.as_str());
        entries = number;
        rest = &rest[end + 1..];
    }
    if let Some(expected) = expected_head
        && !reached
    {
        return Err(ChainBreak {
            line: entries,
            problem: ChainProblem::HeadMismatch {
                expected: expected.to_string(),
            },
        });
    }
    Ok(Verified {
        entries,
        head: prev,
    })
}

/// [`verify`] on a file.
pub fn verify_file(
    path: &Path,
    key: &AuditKey,
    expected_head: Option<&str>,
) -> anyhow::Result<Result<Verified, ChainBreak>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(verify(&bytes, key, expected_head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes([7; 32])
    }

    fn record(i: usize) -> AuditRecord {
        let mut record = AuditRecord::new(
            "alice",
            "researcher",
            &format!("SELECT ben_res_dpt, count(*) FROM ir_ben_r GROUP BY 1 -- {i}"),
            Outcome::Ok,
        );
        record.plan_sha256 = Some(sha256_hex("plan"));
        record.cells_released = 90 + i as u64;
        record.cells_suppressed = 3;
        record.suppressed.insert("persons".into(), 3);
        record
    }

    fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, key()).unwrap();
        for i in 0..n {
            log.append(record(i)).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn join(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (_dir, path) = log_of(5);
        let verified = verify(&std::fs::read(&path).unwrap(), &key(), None).unwrap();
        assert_eq!(verified.entries, 5);
        assert_eq!(verify(b"", &key(), None).unwrap().head, GENESIS);
    }

    #[test]
    fn the_first_line_chains_to_zeros_and_each_line_to_the_previous() {
        let (_dir, path) = log_of(2);
        let lines = lines(&path);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(second["prev"], first["hash"]);
        assert_eq!(first["outcome"], "ok");
        assert_eq!(first["suppressed"]["persons"], 3);
    }

    #[test]
    fn an_edited_line_is_found() {
        let (_dir, path) = log_of(5);
        let mut lines = lines(&path);
        lines[2] = lines[2].replace("\"alice\"", "\"mallory\"");
        let broken = verify(&join(&lines), &key(), None).unwrap_err();
        assert_eq!(
            broken,
            ChainBreak {
                line: 3,
                problem: ChainProblem::Edited
            }
        );
    }

    #[test]
    fn an_edit_down_to_whitespace_is_found() {
        let (_dir, path) = log_of(3);
        let mut lines = lines(&path);
        lines[1] = lines[1].replacen(",", ", ", 1);
        assert_eq!(verify(&join(&lines), &key(), None).unwrap_err().line, 2);
    }

    #[test]
    fn a_resealed_edit_breaks_the_next_line() {
        let (_dir, path) = log_of(5);
        let mut lines = lines(&path);
        // The forger recomputes the edited line's hash; the next line still
        // points at the original.
        let mut line: Line = serde_json::from_str(&lines[2]).unwrap();
        line.record.cells_suppressed = 0;
        let (resealed, _) = seal(line.record, &line.prev, &key()).unwrap();
        lines[2] = resealed.trim_end().to_string();
        let broken = verify(&join(&lines), &key(), None).unwrap_err();
        assert_eq!(
            broken,
            ChainBreak {
                line: 4,
                problem: ChainProblem::Unchained
            }
        );
    }

    #[test]
    fn a_removed_line_is_found() {
        let (_dir, path) = log_of(5);
        let mut lines = lines(&path);
        lines.remove(2);
        assert_eq!(
            verify(&join(&lines), &key(), None).unwrap_err(),
            ChainBreak {
                line: 3,
                problem: ChainProblem::Unchained
            }
        );
        let mut lines = self::lines(&path);
        lines.remove(0);
        assert_eq!(
            verify(&join(&lines), &key(), None).unwrap_err(),
            ChainBreak {
                line: 1,
                problem: ChainProblem::Unchained
            }
        );
    }

    #[test]
    fn reordered_lines_are_found() {
        let (_dir, path) = log_of(5);
        let mut lines = lines(&path);
        lines.swap(1, 3);
        assert_eq!(
            verify(&join(&lines), &key(), None).unwrap_err(),
            ChainBreak {
                line: 2,
                problem: ChainProblem::Unchained
            }
        );
    }

    #[test]
    fn a_truncated_log_is_found() {
        let (_dir, path) = log_of(4);
        let bytes = std::fs::read(&path).unwrap();
        let cut = &bytes[..bytes.len() - 20];
        assert_eq!(
            verify(cut, &key(), None).unwrap_err(),
            ChainBreak {
                line: 4,
                problem: ChainProblem::Truncated
            }
        );
        // Whole lines cut from the end leave a valid, shorter chain: the head
        // kept elsewhere shows it.
        let head = verify(&bytes, &key(), None).unwrap().head;
        let mut lines = lines(&path);
        lines.pop();
        let shorter = join(&lines);
        assert_eq!(verify(&shorter, &key(), None).unwrap().entries, 3);
        assert!(matches!(
            verify(&shorter, &key(), Some(&head)).unwrap_err().problem,
            ChainProblem::HeadMismatch { .. }
        ));
        assert_eq!(verify(&bytes, &key(), Some(&head)).unwrap().entries, 4);
    }

    #[test]
    fn a_reopened_log_continues_its_chain() {
        let (_dir, path) = log_of(3);
        let log = AuditLog::open(&path, key()).unwrap();
        let before = log.head().unwrap();
        let mut refused = AuditRecord::new(
            "alice",
            "researcher",
            "SELECT * FROM ir_ben_r",
            Outcome::Refused,
        );
        refused.rule = Some(seuil_engine::Rule::AggregatesOnly);
        log.append(refused).unwrap();
        assert_ne!(log.head().unwrap(), before);
        let verified = verify(&std::fs::read(&path).unwrap(), &key(), None).unwrap();
        assert_eq!(verified.entries, 4);
        assert_eq!(verified.head, log.head().unwrap());
    }

    #[test]
    fn a_log_with_a_damaged_tail_is_not_continued() {
        let (_dir, path) = log_of(2);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(
            AuditLog::open(&path, key()),
            Err(AuditError::DamagedTail { .. })
        ));
    }

    #[test]
    fn garbage_is_not_an_entry() {
        assert!(matches!(
            verify(b"hello\n", &key(), None).unwrap_err().problem,
            ChainProblem::NotAnEntry(_)
        ));
    }

    #[test]
    fn deleted_lines_with_the_chain_recomputed_without_the_key_are_found() {
        let (_dir, path) = log_of(5);
        let mut lines = lines(&path);
        lines.remove(3);
        lines.remove(1);
        // The forger rebuilds the chain over the remaining lines, with the
        // plain SHA-256 of the old format, then with a key of their own.
        for forged_key in [None, Some(AuditKey::from_bytes([9; 32]))] {
            let mut prev = GENESIS.to_string();
            let mut forged = Vec::new();
            for text in &lines {
                let line: Line = serde_json::from_str(text).unwrap();
                let unsealed = Line {
                    record: line.record,
                    prev: prev.clone(),
                    hash: None,
                };
                let content = serde_json::to_string(&unsealed).unwrap();
                let hash = match &forged_key {
                    None => sha256_hex(&content),
                    Some(key) => key.mac(&content),
                };
                let body = content.strip_suffix('}').unwrap();
                forged.push(format!("{body},\"hash\":\"{hash}\"}}"));
                prev = hash;
            }
            let broken = verify(&join(&forged), &key(), None).unwrap_err();
            assert_eq!(
                broken,
                ChainBreak {
                    line: 1,
                    problem: ChainProblem::Edited
                }
            );
        }
    }

    #[test]
    fn the_head_is_kept_apart_and_a_log_that_grew_still_reaches_it() {
        let (_dir, path) = log_of(3);
        let kept = std::fs::read_to_string(AuditLog::head_path(&path)).unwrap();
        let kept = kept.trim().to_string();
        let log = AuditLog::open(&path, key()).unwrap();
        assert_eq!(log.head().unwrap(), kept);
        log.append(record(9)).unwrap();
        assert_eq!(
            verify(&std::fs::read(&path).unwrap(), &key(), Some(&kept))
                .unwrap()
                .entries,
            4
        );
    }

    #[test]
    fn two_writers_of_one_file_keep_one_chain() {
        let (_dir, path) = log_of(1);
        let first = AuditLog::open(&path, key()).unwrap();
        let second = AuditLog::open(&path, key()).unwrap();
        let threads: Vec<_> = [first, second]
            .into_iter()
            .map(|log| {
                std::thread::spawn(move || {
                    for i in 0..20 {
                        log.append(record(i)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            verify(&std::fs::read(&path).unwrap(), &key(), None)
                .unwrap()
                .entries,
            41
        );
    }

    #[test]
    fn a_key_is_created_once_private_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let created = AuditKey::load_or_create(&path).unwrap();
        let read = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(created.0, read.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(AuditKey::load(&path), Err(AuditError::BadKey(_))));
    }
}
