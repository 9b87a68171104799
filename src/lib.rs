//! spargio: a work-stealing, sharded async runtime built directly on Linux io_uring.
//!
//! Each **shard** is a thread with its own io_uring. Shards wake and message
//! each other with `IORING_OP_MSG_RING`: a message is a completion in the
//! target's ring, so it wakes the target from the same wait that reaps its
//! I/O. Tasks are **pinned** to a shard or **stealable** by idle shards. Where
//! io_uring is unavailable, the **Queue** backend keeps the same API.
//!
//! ```
//! use spargio::{RuntimeBuilder, ShardCtx, Event};
//!
//! let rt = RuntimeBuilder::new().shards(2).build().unwrap();
//! let handle = rt.handle().clone();
//! let echoed = rt
//!     .block_on(async move {
//!         // A responder pinned on shard 1 answers each message with value + 1.
//!         let responder = handle.spawn_pinned(1, async {
//!             let ctx = ShardCtx::current().unwrap();
//!             let Event::RingMsg { from, tag, val } = ctx.next_event().await else { unreachable!() };
//!             ctx.remote(from).unwrap().send_raw(tag, val + 1).await.unwrap();
//!         }).unwrap();
//!         let ctx = ShardCtx::current().unwrap();
//!         ctx.remote(1).unwrap().send_raw(7, 41).await.unwrap();
//!         let Event::RingMsg { val, .. } = ctx.next_event().await else { unreachable!() };
//!         responder.await.unwrap();
//!         val
//!     })
//!     .unwrap();
//! assert_eq!(echoed, 42);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocking;
pub mod boundary;
mod error;
pub mod fs;
pub mod io;
mod mail;
mod msg;
pub mod native;
mod native_any;
pub mod net;
pub mod process;
mod reactor;
mod runtime;
mod shard;
pub mod signal;
mod stats;
pub mod sync;
mod task;
pub mod time;
mod wire;

pub use blocking::BlockingHandle;
pub use error::{JoinError, RuntimeError, SendError};
pub use msg::{Event, NextEvent, RemoteShard, RingMsg, SendTicket, ShardCtx};
pub use native::{UringBoundFd, UringFileSession};
pub use native_any::{NativeAnySession, UnboundOp, UringNativeAny};
pub use runtime::{Backend, Runtime, RuntimeBuilder, RuntimeHandle, TaskPlacement, run};
pub use stats::{RuntimeStats, ShardStats};
pub use task::JoinHandle;

/// The kernel interface crate, re-exported.
pub use spargio_sys as sys;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
