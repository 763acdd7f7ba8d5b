//! Password checks, bounded: a flood of logins costs the attacker, not the
//! server.
//!
//! An argon2 check is slow and needs tens of MiB on purpose. So:
//!
//! - checks run on a fixed number of threads of their own, each with its
//!   argon2 memory allocated once, so that memory stays flat under any
//!   load; at most [`QUEUED_CHECKS`] checks wait for a thread, and the
//!   next login is answered `ResourceExhausted` at once;
//! - after [`FREE_FAILURES`] failed logins from one address, or for one user
//!   name, further logins from it (or for it) are refused without any check
//!   for a backoff that doubles with each failure, up to [`MAX_BACKOFF`]; a
//!   success clears the name's and the address's count;
//! - the failure records are bounded too ([`MAX_TRACKED`]): the oldest go
//!   first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::status::ServerError;
use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;
use tonic::Status;

/// Checks waiting for a thread beyond the running ones.
pub const QUEUED_CHECKS: usize = 32;
/// Failed logins of one address or name before backoff starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Addresses and names whose failures are remembered.
pub const MAX_TRACKED: usize = 10_000;
/// The most argon2 memory one check may use (a larger hash never matches).
const MAX_BLOCKS: usize = 256 * 1024; // 256 MiB of 1 KiB blocks

struct Check {
    password: String,
    hash: Arc<str>,
    reply: oneshot::Sender<bool>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// Until when logins are refused, if they are.
    fn blocked_until(&self) -> Option<Instant> {
        let over = self.count.checked_sub(FREE_FAILURES)?;
        let backoff = Duration::from_secs(1u64 << over.min(9)).min(MAX_BACKOFF);
        Some(self.last + backoff)
    }
}

/// Who a failure counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Address(IpAddr),
    Name(String),
}

/// The bounded password checker.
pub struct Logins {
    queue: SyncSender<Check>,
    failures: Mutex<HashMap<Subject, Failures>>,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins").finish_non_exhaustive()
    }
}

/// Checks a password against an argon2 PHC hash in `blocks`, without
/// allocating. A hash that does not parse, or needs more memory than
/// `blocks`, never matches.
pub fn check_with_memory(password: &str, hash: &str, blocks: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm),
    ) else {
        return false;
    };
    let version = match parsed.version {
        Some(v) => match Version::try_from(v) {
            Ok(version) => version,
            Err(_) => return false,
        },
        None => Version::default(),
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_buffer = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buffer) else {
        return false;
    };
    let needed = params.block_count();
    let Some(memory) = blocks.get_mut(..needed) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
        .is_err()
    {
        return false;
    }
    // Output compares in constant time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// The argon2 memory the configured hashes need.
fn blocks_needed<'a>(hashes: impl Iterator<Item = &'a str>) -> usize {
    hashes
        .filter_map(|h| PasswordHash::new(h).ok())
        .filter_map(|p| Params::try_from(&p).ok())
        .map(|p| p.block_count())
        .max()
        .unwrap_or(0)
        .min(MAX_BLOCKS)
}

fn checker(receiver: Arc<Mutex<Receiver<Check>>>, blocks: usize) {
    let mut memory = vec![Block::default(); blocks];
    loop {
        let check = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(check) = check else {
            return; // the server stopped
        };
        let matches = check_with_memory(&check.password, &check.hash, &mut memory);
        check.reply.send(matches).ok();
    }
}

impl Logins {
    /// A checker with `threads` threads, sized for `hashes`.
    pub fn new<'a>(threads: usize, hashes: impl Iterator<Item = &'a str>) -> anyhow::Result<Self> {
        let blocks = blocks_needed(hashes);
        let (queue, receiver) = sync_channel::<Check>(QUEUED_CHECKS);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("seuil-login-{n}"))
                .spawn(move || checker(receiver, blocks))
                .map_err(|e| anyhow::anyhow!("cannot start a password check thread: {e}"))?;
        }
        Ok(Self {
            queue,
            failures: Mutex::new(HashMap::new()),
        })
    }

    fn subjects(peer: Option<IpAddr>, name: &str) -> Vec<Subject> {
        let mut subjects = vec![Subject::Name(name.to_string())];
        subjects.extend(peer.map(Subject::Address));
        subjects
    }

    /// Refuses a login from `peer` for `name` while either is in backoff.
    pub fn admit(&self, peer: Option<IpAddr>, name: &str) -> Result<(), Status> {
        let failures = self.failures.lock().map_err(|_| {
            Status::from(ServerError::Unavailable(
                "the login records are unavailable",
            ))
        })?;
        let now = Instant::now();
        for subject in Self::subjects(peer, name) {
            if let Some(until) = failures.get(&subject).and_then(Failures::blocked_until)
                && until > now
            {
                return Err(Status::from(ServerError::Busy(format!(
                    "too many failed logins from this address or for this user name; try again in {} seconds",
                    (until - now).as_secs().max(1)
                ))));
            }
        }
        Ok(())
    }

    /// Records the outcome of a login.
    pub fn record(&self, peer: Option<IpAddr>, name: &str, succeeded: bool) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let now = Instant::now();
        for subject in Self::subjects(peer, name) {
            if succeeded {
                failures.remove(&subject);
                continue;
            }
            let entry = failures.entry(subject).or_insert(Failures {
                count: 0,
                last: now,
            });
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
        if failures.len() > MAX_TRACKED {
            // Forget the oldest (and expired) records first.
            let mut ages: Vec<(Instant, Subject)> =
                failures.iter().map(|(s, f)| (f.last, s.clone())).collect();
            ages.sort_by_key(|(last, _)| *last);
            for (_, subject) in ages.into_iter().take(failures.len() - MAX_TRACKED) {
                failures.remove(&subject);
            }
        }
    }

    /// Checks a password on one of the checker threads.
    pub async fn check(&self, password: String, hash: Arc<str>) -> Result<bool, Status> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Check {
            password,
            hash,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Status::from(ServerError::Busy(
                    "the server is checking too many logins at once; try again in a moment".into(),
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Status::from(ServerError::Stopping));
            }
        }
        answer
            .await
            .map_err(|_| Status::from(ServerError::Unavailable("a password check stopped")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passwords::hash_password;

    #[test]
    fn memory_allocated_once_checks_like_argon2() {
        let hash = hash_password("demo").unwrap();
        let mut blocks = vec![Block::default(); blocks_needed(std::iter::once(hash.as_str()))];
        assert!(check_with_memory("demo", &hash, &mut blocks));
        assert!(!check_with_memory("Demo", &hash, &mut blocks));
        assert!(!check_with_memory("demo", "not a hash", &mut blocks));
        let mut too_little = vec![Block::default(); 8];
        assert!(!check_with_memory("demo", &hash, &mut too_little));
    }

    #[test]
    fn failures_back_off_and_a_success_clears_them() {
        let logins = Logins::new(1, std::iter::empty()).unwrap();
        let peer: Option<IpAddr> = Some("10.0.0.7".parse().unwrap());
        for _ in 0..FREE_FAILURES {
            assert!(logins.admit(peer, "alice").is_ok());
            logins.record(peer, "alice", false);
        }
        let refused = logins.admit(peer, "alice").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // Another name from the same address is refused too; another
        // address for another name is not.
        assert!(logins.admit(peer, "carol").is_err());
        assert!(
            logins
                .admit(Some("10.0.0.8".parse().unwrap()), "carol")
                .is_ok()
        );
        logins.record(peer, "alice", true);
        assert!(logins.admit(peer, "alice").is_ok());
    }
}
