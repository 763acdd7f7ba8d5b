//! Checks kept between a query's `GetFlightInfo` and its `DoGet`, so that a
//! query is planned and rewritten once, not twice.
//!
//! `GetFlightInfo` checks the query (and answers a refusal right away); the
//! check is kept under a random id that the ticket carries next to the SQL.
//! `DoGet` takes it back, once, for the user it was checked for. A ticket
//! whose check is gone (taken already, expired, evicted, another server)
//! still runs: its SQL is checked again. Keeping is only a shortcut, so the
//! store can be small and forget freely.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seuil_engine::{CheckedQuery, User};

/// Most checks kept at once, for all users together; beyond it the oldest
/// is forgotten (its `DoGet` plans again).
pub const MAX_KEPT: usize = 256;
/// How long a check waits for its `DoGet`.
pub const KEPT_FOR: Duration = Duration::from_secs(60);

/// What starts a ticket that carries a kept check's id: a NUL byte cannot
/// start a query's text, so a ticket without it is plain SQL.
const TAG: &[u8] = b"\0seuil-kept:";
/// Hex digits of an id.
const ID_LEN: usize = 32;

/// The checks kept for their `DoGet`.
#[derive(Debug, Clone, Default)]
pub struct KeptChecks {
    kept: Arc<Mutex<HashMap<String, Kept>>>,
}

#[derive(Debug)]
struct Kept {
    check: CheckedQuery,
    at: Instant,
}

/// A statement ticket's content: its SQL, and the id of its kept check if
/// it has one.
#[derive(Debug, PartialEq, Eq)]
pub struct TicketContent<'a> {
    /// The id of the kept check.
    pub id: Option<&'a str>,
    /// The query's text.
    pub sql: &'a [u8],
}

impl KeptChecks {
    /// Keeps a check; returns the ticket that finds it again (and holds the
    /// SQL, for when it is gone).
    pub fn keep(&self, check: CheckedQuery, sql: &str) -> Vec<u8> {
        let id = self.keep_id(check);
        let mut ticket = Vec::with_capacity(TAG.len() + ID_LEN + 1 + sql.len());
        ticket.extend_from_slice(TAG);
        ticket.extend_from_slice(id.as_bytes());
        ticket.push(b'\n');
        ticket.extend_from_slice(sql.as_bytes());
        ticket
    }

    /// Keeps a check; returns its id.
    pub fn keep_id(&self, check: CheckedQuery) -> String {
        let id = hex::encode(rand::random::<[u8; ID_LEN / 2]>());
        // A poisoned lock only loses the shortcut.
        if let Ok(mut kept) = self.kept.lock() {
            let now = Instant::now();
            kept.retain(|_, k| now.duration_since(k.at) < KEPT_FOR);
            if kept.len() >= MAX_KEPT
                && let Some(oldest) = kept
                    .iter()
                    .min_by_key(|(_, k)| k.at)
                    .map(|(id, _)| id.clone())
            {
                kept.remove(&oldest);
            }
            kept.insert(id.clone(), Kept { check, at: now });
        }
        id
    }

    /// Takes back the check of `id` if it is still kept and was made for
    /// `user`; another user's id is as unknown as a made-up one.
    pub fn take(&self, id: &str, user: &User) -> Option<CheckedQuery> {
        let mut kept = self.kept.lock().ok()?;
        let fresh = kept
            .get(id)
            .is_some_and(|k| k.check.user() == user && k.at.elapsed() < KEPT_FOR);
        if !fresh {
            return None;
        }
        kept.remove(id).map(|k| k.check)
    }
}

/// Reads a statement ticket: a kept check's id and the SQL, or the SQL
/// alone.
pub fn ticket_content(ticket: &[u8]) -> TicketContent<'_> {
    let id_and_sql = ticket.strip_prefix(TAG).and_then(|rest| {
        let (id, sql) = rest.split_at_checked(ID_LEN)?;
        let sql = sql.strip_prefix(b"\n")?;
        let id = std::str::from_utf8(id)
            .ok()
            .filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit()))?;
        Some((id, sql))
    });
    match id_and_sql {
        Some((id, sql)) => TicketContent { id: Some(id), sql },
        None => TicketContent {
            id: None,
            sql: ticket,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_carry_the_sql_and_plain_sql_is_a_ticket_too() {
        let id = "0123456789abcdef0123456789abcdef";
        let mut ticket = TAG.to_vec();
        ticket.extend_from_slice(id.as_bytes());
        ticket.extend_from_slice(b"\nSELECT 1");
        assert_eq!(
            ticket_content(&ticket),
            TicketContent {
                id: Some(id),
                sql: b"SELECT 1"
            }
        );
        assert_eq!(
            ticket_content(b"SELECT 1"),
            TicketContent {
                id: None,
                sql: b"SELECT 1"
            }
        );
        // A damaged tag is plain text, which the engine then refuses.
        let short = [TAG, b"0123\nSELECT 1"].concat();
        assert_eq!(ticket_content(&short).id, None);
    }
}
