//! Limits that the server enforces around the engine: how many queries run
//! at once, for one user and for everyone, how long queries wait for their
//! turn, and how long a query may take from its start to the last batch
//! sent. (SQL size, plan size and the memory pool are the engine's own
//! options.)
//!
//! Both hold for the life of the result stream: the slot and the deadline
//! travel inside [`LimitedStream`], so a client that disconnects drops the
//! stream, which cancels the query and frees the slot at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::server::status::ServerError;
use futures::Stream;
pub use seuil_engine::Deadline;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;

/// The queue in front of the engine: at most `per_user` queries of one user
/// and `total` queries in all run at once. Beyond, queries wait, first in
/// first served for each user, then across users (each user has at most
/// `per_user` queries waiting for a global slot, so a user with many
/// queued queries does not delay the others' first ones); a query waits at
/// most `wait`, and at most `queued_per_user` of one user's queries wait.
#[derive(Debug, Clone)]
pub struct QuerySlots {
    per_user: usize,
    queued_per_user: usize,
    wait: Duration,
    total: Arc<Semaphore>,
    users: Arc<Mutex<HashMap<String, UserQueue>>>,
}

#[derive(Debug)]
struct UserQueue {
    running: Arc<Semaphore>,
    waiting: usize,
}

/// A right to run one query, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _user: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// Counts one waiting query of a user while it waits.
struct Waiting<'a> {
    slots: &'a QuerySlots,
    user: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut users) = self.slots.users.lock()
            && let Some(queue) = users.get_mut(self.user)
        {
            queue.waiting = queue.waiting.saturating_sub(1);
        }
    }
}

impl QuerySlots {
    /// A queue of `per_user` running queries per user, `total` in all, with
    /// at most `queued_per_user` waiting per user, for at most `wait` each.
    pub fn new(per_user: usize, total: usize, queued_per_user: usize, wait: Duration) -> Self {
        let cap = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            per_user: cap(per_user),
            queued_per_user,
            wait,
            total: Arc::new(Semaphore::new(cap(total))),
            users: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn busy(&self) -> Status {
        Status::from(ServerError::Busy(format!(
            "limit reached: you already run {} queries at once, the most allowed, and {} more wait; wait for one to finish or read it to the end",
            self.per_user, self.queued_per_user
        )))
    }

    /// Takes a slot for one of `user`'s queries, waiting for it when all
    /// are in use; `ResourceExhausted` when the user's queue is full or the
    /// wait runs out.
    pub async fn acquire(&self, user: &str) -> Result<Slot, Status> {
        let running = {
            let mut users = self.users.lock().map_err(|_| {
                Status::from(ServerError::Unavailable("the query slots are unavailable"))
            })?;
            let queue = users.entry(user.to_string()).or_insert_with(|| UserQueue {
                running: Arc::new(Semaphore::new(self.per_user)),
                waiting: 0,
            });
            // A slot free right now needs no place in the queue.
            if queue.running.available_permits() == 0 {
                if queue.waiting >= self.queued_per_user {
                    return Err(self.busy());
                }
                queue.waiting += 1;
            } else {
                queue.waiting += 1;
            }
            Arc::clone(&queue.running)
        };
        let _waiting = Waiting { slots: self, user };
        let deadline = Instant::now() + self.wait;
        let timed_out = || {
            Status::from(ServerError::Busy(format!(
                "limit reached: the query waited {} seconds for its turn; try again when the server is less busy",
                self.wait.as_secs()
            )))
        };
        let user_permit = tokio::time::timeout_at(deadline, running.acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| {
                Status::from(ServerError::Unavailable("the query slots are unavailable"))
            })?;
        let total_permit =
            tokio::time::timeout_at(deadline, Arc::clone(&self.total).acquire_owned())
                .await
                .map_err(|_| timed_out())?
                .map_err(|_| {
                    Status::from(ServerError::Unavailable("the query slots are unavailable"))
                })?;
        Ok(Slot {
            _user: user_permit,
            _total: total_permit,
        })
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
                seconds = this.deadline.seconds(),
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
    pub use seuil_engine::Deadline;

    use super::*;
    use futures::StreamExt;

    fn slots(per_user: usize, queued: usize, wait_ms: u64) -> QuerySlots {
        QuerySlots::new(per_user, 16, queued, Duration::from_millis(wait_ms))
    }

    #[tokio::test]
    async fn a_user_gets_at_most_their_slots_and_others_are_unaffected() {
        let slots = slots(2, 0, 50);
        let a = slots.acquire("alice").await.unwrap();
        let _b = slots.acquire("alice").await.unwrap();
        let refused = slots.acquire("alice").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(slots.acquire("carol").await.is_ok());
        drop(a);
        assert!(slots.acquire("alice").await.is_ok());
    }

    #[tokio::test]
    async fn queries_beyond_the_slots_wait_their_turn_in_order() {
        let slots = slots(1, 8, 5_000);
        let first = slots.acquire("alice").await.unwrap();
        let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for i in 0..3 {
            let slots = slots.clone();
            let done = done.clone();
            waiting.push(tokio::spawn(async move {
                let slot = slots.acquire("alice").await.unwrap();
                done.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
            // Let each one queue before the next.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        let served: Vec<i32> = (0..3).map(|_| order.try_recv().unwrap()).collect();
        assert_eq!(served, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_is_refused() {
        let slots = slots(1, 8, 20);
        let _held = slots.acquire("alice").await.unwrap();
        let refused = slots.acquire("alice").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("waited"),
            "{}",
            refused.message()
        );
    }

    #[tokio::test]
    async fn a_stream_past_its_deadline_ends_with_resource_exhausted_and_frees_its_slot() {
        let slots = slots(1, 0, 10);
        let slot = slots.acquire("alice").await.unwrap();
        let endless: BoxedStream<u32> = Box::pin(futures::stream::pending());
        let mut stream = LimitedStream::new(endless, Deadline::after(0), slot);
        let first = stream.next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::ResourceExhausted);
        assert!(stream.next().await.is_none());
        assert!(slots.acquire("alice").await.is_ok());
    }

    #[tokio::test]
    async fn a_dropped_stream_frees_its_slot() {
        let slots = slots(1, 0, 10);
        let slot = slots.acquire("alice").await.unwrap();
        let endless: BoxedStream<u32> = Box::pin(futures::stream::pending());
        let stream = LimitedStream::new(endless, Deadline::after(60), slot);
        assert!(slots.acquire("alice").await.is_err());
        drop(stream);
        assert!(slots.acquire("alice").await.is_ok());
    }
}
