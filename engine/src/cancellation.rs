//! Stopping a query's CPU work when the query is dropped.
//!
//! A query's future stops at its next await when it is dropped (a timeout,
//! a client that left); work that runs off the async threads (the release
//! step's linear programs) does not, and must look at a flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag that stops long release work (the attacker's linear programs)
/// when the query is cancelled or times out.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Cancels its [`Cancellation`] when dropped: held by a query's future, so
/// that the release work of a query dropped midway (timeout, client gone)
/// stops too.
#[derive(Debug)]
pub struct CancelOnDrop(pub Cancellation);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
