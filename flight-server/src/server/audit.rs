//! The audit log (DESIGN.md §2, rule 9): every query, accepted or refused,
//! becomes one JSON line, appended and synced to disk before any of its
//! result leaves the server.
//!
//! Lines are hash-chained so that tampering shows. Each line holds `prev`,
//! the `hash` of the line before it (64 zeros for the first line), and ends
//! with its own `hash`: the SHA-256 of the line's text without the `hash`
//! field, that is of its exact bytes up to `,"hash":` with the closing brace
//! put back. Hashing the bytes as written, rather than a re-serialization,
//! means that any change to a line, down to one space, shows. Editing a line
//! breaks its own hash; removing, inserting or reordering lines breaks the
//! `prev` of the line that follows; removing lines from the start breaks the
//! first line's `prev`. Removing whole lines from the end leaves a shorter
//! valid chain, so [`verify`] can compare the last hash with one kept
//! elsewhere (the server logs it when it starts and stops).
//!
//! This module knows nothing of Flight or of the engine: the server builds an
//! [`AuditRecord`] from each outcome, and `seuil audit verify` calls
//! [`verify_file`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What became of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Checked, run, and its released cells sent.
    Ok,
    /// Refused by a rule of the policy (`rule` says which).
    Refused,
    /// Failed for another reason (`error` says which kind).
    Error,
}

/// One query as the server reports it: everything in a line but the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, in RFC 3339 UTC.
    pub time: String,
    /// Who.
    pub user: String,
    /// Under which role.
    pub role: String,
    /// The SQL as the client sent it.
    pub sql: String,
    /// Bound parameters of a prepared statement, as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// SHA-256 of the rewritten plan's text, when the query was rewritten.
    pub plan_sha256: Option<String>,
    /// Cells released.
    pub cells_released: u64,
    /// Cells suppressed.
    pub cells_suppressed: u64,
    /// Suppressed cells by reason.
    pub suppressed: BTreeMap<String, u64>,
    /// What became of the query.
    pub outcome: Outcome,
    /// The rule that refused the query (its stable code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The kind of error, when the query failed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The refusal or error message the client received (never data values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AuditRecord {
    /// A record stamped now, with nothing released yet.
    pub fn new(user: &str, role: &str, sql: &str, outcome: Outcome) -> Self {
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            user: user.to_string(),
            role: role.to_string(),
            sql: sql.to_string(),
            params: Vec::new(),
            plan_sha256: None,
            cells_released: 0,
            cells_suppressed: 0,
            suppressed: BTreeMap::new(),
            outcome,
            rule: None,
            error: None,
            message: None,
        }
    }
}

/// The SHA-256 of a text, in hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
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
fn seal(record: AuditRecord, prev: &str) -> Result<(String, String), AuditError> {
    let unsealed = Line {
        record,
        prev: prev.to_string(),
        hash: None,
    };
    let content =
        serde_json::to_string(&unsealed).map_err(|e| AuditError::Encode(e.to_string()))?;
    let hash = sha256_hex(&content);
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
    /// The existing log ends with a line that is not a sealed entry, so the
    /// chain cannot be continued.
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
    last_hash: String,
    poisoned: bool,
}

/// The append-only, hash-chained audit log. Cheap to clone; appends are
/// serialized so that each line chains to the one before it.
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
    /// Opens (or creates) the log at `path`, continuing the chain from its
    /// last line.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
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
        let last_hash = last_hash(&mut file, path)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Writer {
                file,
                path: path.to_path_buf(),
                last_hash,
                poisoned: false,
            })),
        })
    }

    /// The hash of the last line (the chain's head), or [`GENESIS`].
    pub fn head(&self) -> String {
        match self.writer.lock() {
            Ok(writer) => writer.last_hash.clone(),
            Err(poisoned) => poisoned.into_inner().last_hash.clone(),
        }
    }

    /// Appends a record and syncs it to disk; returns the line's hash. Blocks
    /// on the disk: call it from a blocking thread.
    pub fn append(&self, record: AuditRecord) -> Result<String, AuditError> {
        let mut writer = self.writer.lock().map_err(|_| AuditError::Poisoned)?;
        if writer.poisoned {
            return Err(AuditError::Poisoned);
        }
        let (line, hash) = seal(record, &writer.last_hash)?;
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
        writer.last_hash = hash.clone();
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

/// Reads the hash of the file's last line, checking that the line is whole
/// and sealed: a crash mid-write must not be silently chained over.
fn last_hash(file: &mut File, path: &Path) -> Result<String, AuditError> {
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
    match check_line(text) {
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
    /// The last hash differs from the one the caller expected.
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
                "the last hash is not the expected {expected}: lines were removed from the end or added"
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

fn check_line(text: &str) -> Result<Line, ChainProblem> {
    let line: Line =
        serde_json::from_str(text).map_err(|e| ChainProblem::NotAnEntry(e.to_string()))?;
    let (content, stored) = unseal(text)
        .ok_or_else(|| ChainProblem::NotAnEntry("no hash at the end of the line".into()))?;
    if line.hash.as_deref() != Some(stored) || sha256_hex(&content) != stored {
        return Err(ChainProblem::Edited);
    }
    Ok(line)
}

/// Checks a whole log: every line sealed, each chained to the one before,
/// the first to [`GENESIS`], and, when `expected_head` is given, the last
/// hash equal to it.
pub fn verify(log: &[u8], expected_head: Option<&str>) -> Result<Verified, ChainBreak> {
    let mut prev = GENESIS.to_string();
    let mut entries = 0;
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
        let line = check_line(text).map_err(|problem| ChainBreak {
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
        entries = number;
        rest = &rest[end + 1..];
    }
    if let Some(expected) = expected_head
        && expected != prev
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
    expected_head: Option<&str>,
) -> anyhow::Result<Result<Verified, ChainBreak>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(verify(&bytes, expected_head))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let log = AuditLog::open(&path).unwrap();
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
        let verified = verify(&std::fs::read(&path).unwrap(), None).unwrap();
        assert_eq!(verified.entries, 5);
        assert_eq!(verify(b"", None).unwrap().head, GENESIS);
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
        let broken = verify(&join(&lines), None).unwrap_err();
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
        assert_eq!(verify(&join(&lines), None).unwrap_err().line, 2);
    }

    #[test]
    fn a_resealed_edit_breaks_the_next_line() {
        let (_dir, path) = log_of(5);
        let mut lines = lines(&path);
        // The forger recomputes the edited line's hash; the next line still
        // points at the original.
        let mut line: Line = serde_json::from_str(&lines[2]).unwrap();
        line.record.cells_suppressed = 0;
        let (resealed, _) = seal(line.record, &line.prev).unwrap();
        lines[2] = resealed.trim_end().to_string();
        let broken = verify(&join(&lines), None).unwrap_err();
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
            verify(&join(&lines), None).unwrap_err(),
            ChainBreak {
                line: 3,
                problem: ChainProblem::Unchained
            }
        );
        let mut lines = self::lines(&path);
        lines.remove(0);
        assert_eq!(
            verify(&join(&lines), None).unwrap_err(),
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
            verify(&join(&lines), None).unwrap_err(),
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
            verify(cut, None).unwrap_err(),
            ChainBreak {
                line: 4,
                problem: ChainProblem::Truncated
            }
        );
        // Whole lines cut from the end leave a valid, shorter chain: the head
        // kept elsewhere shows it.
        let head = verify(&bytes, None).unwrap().head;
        let mut lines = lines(&path);
        lines.pop();
        let shorter = join(&lines);
        assert_eq!(verify(&shorter, None).unwrap().entries, 3);
        assert!(matches!(
            verify(&shorter, Some(&head)).unwrap_err().problem,
            ChainProblem::HeadMismatch { .. }
        ));
        assert_eq!(verify(&bytes, Some(&head)).unwrap().entries, 4);
    }

    #[test]
    fn a_reopened_log_continues_its_chain() {
        let (_dir, path) = log_of(3);
        let log = AuditLog::open(&path).unwrap();
        let before = log.head();
        let mut refused = AuditRecord::new(
            "alice",
            "researcher",
            "SELECT * FROM ir_ben_r",
            Outcome::Refused,
        );
        refused.rule = Some("aggregates_only".into());
        log.append(refused).unwrap();
        assert_ne!(log.head(), before);
        let verified = verify(&std::fs::read(&path).unwrap(), None).unwrap();
        assert_eq!(verified.entries, 4);
        assert_eq!(verified.head, log.head());
    }

    #[test]
    fn a_log_with_a_damaged_tail_is_not_continued() {
        let (_dir, path) = log_of(2);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(
            AuditLog::open(&path),
            Err(AuditError::DamagedTail { .. })
        ));
    }

    #[test]
    fn garbage_is_not_an_entry() {
        assert!(matches!(
            verify(b"hello\n", None).unwrap_err().problem,
            ChainProblem::NotAnEntry(_)
        ));
    }
}
