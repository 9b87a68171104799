//! Harness code shared by the benchmark suites (`mod common;` in each bench file).
//!
//! - [`harness`]: a long-lived runtime driven from the bench thread by commands,
//!   and CPU-time accounting written next to criterion's estimates.
//! - [`pingpong`]: the coordination workload (round trips, one-way drain) for
//!   spargio, Tokio with 2 workers, and Tokio forced across two threads.
//! - [`histogram`]: a log-bucket latency histogram.
//! - [`echo`]: the loopback echo server of the network benchmarks, runtimes
//!   driving clients against it, and the `net_echo_rtt_256b` round trip.
#![forbid(unsafe_code)]
// Each bench file uses a different subset of this module.
#![allow(dead_code)]

pub mod echo;
pub mod harness;
pub mod histogram;
pub mod pingpong;
