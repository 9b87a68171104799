//! Invariants: sqe.
