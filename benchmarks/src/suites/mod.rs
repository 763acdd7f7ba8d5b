//! The benchmark suites.

pub mod flight;
pub mod generation;
pub mod queries;
