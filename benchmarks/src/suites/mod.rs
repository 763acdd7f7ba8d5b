//! The benchmark suites.

pub mod generation;
pub mod queries;
