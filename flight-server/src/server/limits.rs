//! Limits that the server enforces around the engine: how many queries one
//! user runs at once, and how long a query may take from its start to the
//! last batch sent. (SQL length, nesting and the memory pool are the
//! engine's own options.)
//!
//! Both hold for the life of the result stream: the slot and the deadline
//! travel inside [`LimitedStream`], so a client that disconnects drops the
//! stream, which cancels the query and frees the slot at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use seuil_engine::EngineError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;

/// Per-user caps on queries running at once.
#[derive(Debug, Clone)]
pub struct QuerySlots {
    per_user: usize,
    users: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// A user's right to run one query, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl QuerySlots {
    /// At most `per_user` queries per user at once.
    pub fn new(per_user: usize) -> Self {
        Self {
            per_user,
            users: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one of the user's slots, or answers `ResourceExhausted` when
    /// all are in use. Never waits: a client that opens more queries than it
    /// may should hear so, not hang.
    pub fn acquire(&self, user: &str) -> Result<Slot, Status> {
        let semaphore = {
            let mut users = self
                .users
                .lock()
                .map_err(|_| Status::internal("the query slots are unavailable"))?;
            Arc::clone(users.entry(user.to_string()).or_insert_with(|| {
                Arc::new(Semaphore::new(self.per_user.min(Semaphore::MAX_PERMITS)))
            }))
        };
        semaphore.try_acquire_owned().map(|permit| Slot { _permit: permit }).map_err(|_| {
            Status::resource_exhausted(format!(
                "limit reached: you already run {} queries at once, the most allowed; wait for one to finish or read it to the end",
                self.per_user
            ))
        })
    }
}

/// Thirty years: the deadline of a query whose configured timeout is too
/// large to represent.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// When a query must be done by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    seconds: u64,
}

impl Deadline {
    /// `seconds` from now.
    pub fn after(seconds: u64) -> Self {
        let now = Instant::now();
        Self {
            // A timeout too large to represent means no timeout in practice.
            at: now
                .checked_add(Duration::from_secs(seconds))
                .unwrap_or_else(|| now + FAR_FUTURE),
            seconds,
        }
    }

    /// The instant.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The error of a query stopped by this deadline.
    pub fn exceeded(&self) -> EngineError {
        EngineError::Limit(format!(
            "the query ran longer than {} seconds and was stopped; narrow it or aggregate more",
            self.seconds
        ))
    }
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A result stream under a deadline, holding the user's slot until it ends
/// or is dropped.
pub struct LimitedStream<T> {
    inner: Option<BoxedStream<T>>,
    sleep: Pin<Box<Sleep>>,
    deadline: Deadline,
    slot: Option<Slot>,
}

impl<T> LimitedStream<T> {
    /// Wraps `inner`.
    pub fn new(inner: BoxedStream<T>, deadline: Deadline, slot: Slot) -> Self {
        Self {
            inner: Some(inner),
            sleep: Box::pin(tokio::time::sleep_until(deadline.instant())),
            deadline,
            slot: Some(slot),
        }
    }

    fn finish(&mut self) {
        // Dropping the inner stream cancels whatever still runs for it.
        self.inner = None;
        self.slot = None;
    }
}

impl<T> Stream for LimitedStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The deadline first: a stream that is always ready must still stop.
        if this.sleep.as_mut().poll(cx).is_ready() {
            tracing::warn!(
                seconds = this.deadline.seconds,
                "query stopped at its deadline"
            );
            let status = crate::server::status::from_engine(&this.deadline.exceeded());
            this.finish();
            return Poll::Ready(Some(Err(status)));
        }
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                this.finish();
                Poll::Ready(Some(Err(status)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn a_user_gets_at_most_their_slots_and_others_are_unaffected() {
        let slots = QuerySlots::new(2);
        let a = slots.acquire("alice").unwrap();
        let _b = slots.acquire("alice").unwrap();
        let refused = slots.acquire("alice").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(slots.acquire("carol").is_ok());
        drop(a);
        assert!(slots.acquire("alice").is_ok());
    }

    #[tokio::test]
    async fn a_stream_past_its_deadline_ends_with_resource_exhausted_and_frees_its_slot() {
        let slots = QuerySlots::new(1);
        let slot = slots.acquire("alice").unwrap();
        let endless: BoxedStream<u32> = Box::pin(futures::stream::pending());
        let mut stream = LimitedStream::new(endless, Deadline::after(0), slot);
        let first = stream.next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::ResourceExhausted);
        assert!(stream.next().await.is_none());
        assert!(slots.acquire("alice").is_ok());
    }

    #[tokio::test]
    async fn a_dropped_stream_frees_its_slot() {
        let slots = QuerySlots::new(1);
        let slot = slots.acquire("alice").unwrap();
        let endless: BoxedStream<u32> = Box::pin(futures::stream::pending());
        let stream = LimitedStream::new(endless, Deadline::after(60), slot);
        assert!(slots.acquire("alice").is_err());
        drop(stream);
        assert!(slots.acquire("alice").is_ok());
    }
}
