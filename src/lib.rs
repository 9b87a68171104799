//! spargio: a work-stealing, sharded async runtime built directly on Linux io_uring.
//!
//! # Getting started
//!
//! Add `spargio` to `Cargo.toml` (see the README: a git or path dependency
//! for now), put `#[spargio::main]` on an `async fn main`, and spawn tasks
//! with [`spawn`]. A TCP echo server and a client, in one program:
//!
//! ```
//! use spargio::net::{TcpListener, TcpStream};
//!
//! #[spargio::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
//!     let addr = listener.local_addr()?;
//!
//!     // The server: one task per connection, echoing what it receives.
//!     let server = spargio::spawn(async move {
//!         loop {
//!             let Ok((stream, _peer)) = listener.accept().await else { return };
//!             spargio::spawn(async move {
//!                 let mut buf = Vec::with_capacity(4096);
//!                 loop {
//!                     // Buffers are owned: each op takes one and gives it back.
//!                     let (res, b) = stream.recv(buf).await;
//!                     if !matches!(res, Ok(n) if n > 0) {
//!                         return; // closed by the peer, or an error
//!                     }
//!                     let (res, mut b) = stream.write_all(b).await;
//!                     if res.is_err() {
//!                         return;
//!                     }
//!                     b.clear();
//!                     buf = b;
//!                 }
//!             });
//!         }
//!     });
//!
//!     // A client.
//!     let client = TcpStream::connect(addr).await?;
//!     client.write_all(b"hello".to_vec()).await.0?;
//!     let (res, reply) = client.read_exact(vec![0u8; 5]).await;
//!     res?;
//!     assert_eq!(reply, b"hello");
//!
//!     // CPU-heavy or blocking work goes to the blocking pool.
//!     let sum = spargio::spawn_blocking(|| (1..=100u64).sum::<u64>()).await?;
//!     assert_eq!(sum, 5050);
//!     server.abort();
//!     Ok(())
//! }
//! ```
//!
//! [`spawn`] and [`spawn_blocking`] use the runtime the caller runs on;
//! with a [`RuntimeHandle`] (from [`Runtime::handle`] or
//! [`RuntimeHandle::current`]) you choose the placement and can spawn from
//! any thread. Tests use [`macro@test`]; without the attributes, build a
//! runtime with [`RuntimeBuilder`] and call [`Runtime::block_on`]. The
//! modules: [`fs`] and [`net`] (I/O on io_uring ops), [`time`], [`sync`],
//! [`boundary`] (calls between spargio and Tokio or plain threads), and
//! [`native`] (per-shard I/O lanes).
//!
//! # Shards and MSG_RING
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
//!
//! # Cargo features
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `macros` | yes | [`macro@main`] and [`macro@test`] (the `spargio-macros` crate, which has no dependencies) |
//! | `tokio-io` | no | `tokio::io::{AsyncRead, AsyncBufRead, AsyncWrite}` for [`compat::Io`] (hyper, axum, tonic) |
//! | `futures-io` | no | `futures_io::{AsyncRead, AsyncBufRead, AsyncWrite}` for [`compat::Io`] |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "macros")]
#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __private;
mod blocking;
pub mod boundary;
pub mod compat;
mod driver;
mod error;
mod fd_lease;
pub mod fs;
pub mod io;
mod mail;
mod msg;
pub mod native;
mod native_any;
pub mod net;
pub mod process;
mod runtime;
mod shard;
pub mod signal;
mod spawn;
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
pub use spawn::{spawn, spawn_blocking, try_spawn, try_spawn_blocking};
pub use stats::{RuntimeStats, ShardStats};
pub use task::JoinHandle;

/// Runs `async fn main` on a spargio runtime.
///
/// The attribute builds a runtime with [`RuntimeBuilder`], runs the
/// function's body as a task on shard 0 (so it need not be `Send`), blocks
/// the `main` thread until it returns, shuts the runtime down and returns
/// the body's value. `main` may return `()` or anything `main` may return,
/// such as `Result<(), E>`; the value must be `Send`, so a boxed error is
/// `Box<dyn Error + Send + Sync>`.
///
/// ```no_run
/// #[spargio::main(shards = 2)]
/// async fn main() -> std::io::Result<()> {
///     let text = spargio::fs::read_to_string("/etc/hostname").await?;
///     println!("{}", text.trim());
///     Ok(())
/// }
/// ```
///
/// Arguments, all optional, separated by commas:
///
/// | argument | meaning | default |
/// |---|---|---|
/// | `shards = N` | [`RuntimeBuilder::shards`] (N ≥ 1) | one per CPU |
/// | `backend = "io_uring"` or `"queue"` | [`RuntimeBuilder::backend`] | `"io_uring"` |
/// | `fallback = true` or `false` | [`RuntimeBuilder::fallback_to_queue`] | `true` |
/// | `crate = "path"` | where the spargio crate is, when renamed in Cargo.toml | `"::spargio"` |
///
/// # Panics
///
/// With a message saying why, when the runtime cannot start (for example
/// `backend = "io_uring", fallback = false` where io_uring is unavailable),
/// or when it is used from inside a spargio shard. A panic in the body
/// propagates.
///
/// # Misuse is a compile error
///
/// It goes on an `async fn`:
///
/// ```compile_fail
/// #[spargio::main]
/// fn main() {}
/// ```
///
/// `main` takes no arguments:
///
/// ```compile_fail
/// #[spargio::main]
/// async fn main(args: Vec<String>) {}
/// ```
///
/// Unknown arguments and bad values are rejected:
///
/// ```compile_fail
/// #[spargio::main(workers = 2)]
/// async fn main() {}
/// ```
///
/// ```compile_fail
/// #[spargio::main(shards = 0)]
/// async fn main() {}
/// ```
///
/// ```compile_fail
/// #[spargio::main(backend = "epoll")]
/// async fn main() {}
/// ```
///
/// ```compile_fail
/// #[spargio::main(fallback = "no")]
/// async fn main() {}
/// ```
///
/// ```compile_fail
/// #[spargio::main(shards = 2, shards = 3)]
/// async fn main() {}
/// ```
///
/// The returned value travels from shard 0 to the `main` thread, so it must
/// be `Send` (the error points at the return type):
///
/// ```compile_fail
/// #[spargio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     Ok(())
/// }
/// ```
///
/// ```
/// #[spargio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     Ok(())
/// }
/// ```
#[cfg(feature = "macros")]
#[doc(inline)]
pub use spargio_macros::main;

/// Runs an `async fn` test on a runtime of its own.
///
/// Adds `#[test]`, and otherwise works as [`macro@main`] with the same
/// arguments, except that a test's runtime has **one shard** unless
/// `shards = N` says otherwise (the test harness runs tests in parallel).
/// Other attributes (`#[should_panic]`, `#[ignore]`) go below it.
///
/// ```no_run
/// #[spargio::test(shards = 2, backend = "queue")]
/// async fn spawns_on_the_queue_backend() {
///     let task = spargio::spawn(async { 1 + 1 });
///     assert_eq!(task.await.unwrap(), 2);
/// }
/// ```
///
/// A test takes no arguments and is an `async fn`:
///
/// ```compile_fail
/// #[spargio::test]
/// async fn with_argument(n: u32) {}
/// ```
///
/// ```compile_fail
/// #[spargio::test]
/// fn not_async() {}
/// ```
///
/// ```compile_fail
/// #[spargio::test]
/// async fn generic<T>() {}
/// ```
#[cfg(feature = "macros")]
#[doc(inline)]
pub use spargio_macros::test;

/// The kernel interface crate, re-exported.
pub use spargio_sys as sys;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
