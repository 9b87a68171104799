//! Invariants: msg.
