//! Invariants: ring.
