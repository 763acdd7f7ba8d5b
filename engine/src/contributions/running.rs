//! The running state of a person's partial in one cell, before it is
//! bounded: shared by the pass ([`super::exec`]) and the merger of the
//! persons cut between partitions ([`super::boundary`]).

use super::node::Partial;
use crate::functions::exact_sum::Sum;

/// The running state of one partial of one person in one cell.
#[derive(Debug, Clone)]
pub(super) enum Running {
    /// Non-null values so far.
    Count(u64),
    /// Their exact sum.
    Sum(Sum),
}

impl Running {
    pub(super) fn new(partial: &Partial) -> Self {
        match partial {
            Partial::Count { .. } => Running::Count(0),
            Partial::ClampedSum { .. } => Running::Sum(Sum::default()),
        }
    }

    /// Adds the state of another part of the same person's rows.
    pub(super) fn absorb(&mut self, other: &Running) {
        match (self, other) {
            (Running::Count(a), Running::Count(b)) => *a += b,
            (Running::Sum(a), Running::Sum(b)) => a.absorb(b),
            // States of one partial are of one kind.
            _ => {}
        }
    }

    /// The bounded partial, as the cell's aggregate adds it.
    pub(super) fn bounded(&self, partial: &Partial) -> Option<i64> {
        match (partial, self) {
            (Partial::Count { cap }, Running::Count(n)) => {
                Some(i64::try_from((*n).min(u64::from(*cap))).unwrap_or(i64::MAX))
            }
            (
                Partial::ClampedSum {
                    lower,
                    upper,
                    grid_power,
                },
                Running::Sum(sum),
            ) => sum.value().map(|v| {
                // NaN is the largest value, as DataFusion's `least` and
                // `greatest` order it.
                let clamped = if v.is_nan() {
                    *upper
                } else {
                    v.clamp(*lower, *upper)
                };
                // Rounded half away from zero, as DataFusion's `round`.
                (clamped * 2f64.powi(-grid_power)).round() as i64
            }),
            _ => None,
        }
    }
}
