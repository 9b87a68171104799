//! Invariants shared by the property tests and the fuzz targets.
//!
//! Each function takes arbitrary input, runs one piece of ring logic, and
//! panics with a message when an invariant breaks. proptest suites and the
//! cargo-fuzz targets call the same functions, so a fuzz finding is one
//! `check::…` call away from a regression test.

pub mod lifecycle;
pub mod msg;
pub mod ring;
pub mod sqe;
