//! Networking on io_uring: TCP, UDP and Unix-domain sockets.
//!
//! Sockets are created, connected, accepted, read, written and shut down with
//! native io_uring ops (`SOCKET`, `CONNECT`, `ACCEPT` single and multishot,
//! `SEND`, `RECV`, `SENDMSG`, `RECVMSG`, `SHUTDOWN`, and multishot `RECV` into
//! provided buffers). Only `bind`, which never blocks, is a plain call.
//!
//! - **Owned buffers.** A send or receive takes its buffer by value and gives
//!   it back with the result ([`BufResult`](crate::io::BufResult)), so
//!   dropping a future mid-operation can never free memory the kernel still
//!   writes: the op keeps the buffer until its final completion.
//! - **Close-on-exec, no `SIGPIPE`.** Every socket is `SOCK_CLOEXEC`; every
//!   send carries `MSG_NOSIGNAL`, so a reset peer is an `EPIPE` error.
//! - **Name resolution never blocks a shard.** Constructors take a
//!   `SocketAddr`; [`lookup_host`] resolves names on the blocking pool.
//! - **Shards.** An op runs on the ring of the shard whose task calls it,
//!   unless its socket is bound to a shard ([`TcpStream::bind_to_shard`],
//!   [`TcpListener::accept_round_robin`]): then it is steered there before
//!   submission, from any thread.
//! - **Queue backend.** The same API; each op is tried at once with
//!   `MSG_DONTWAIT` on its shard, and one that would block waits for
//!   readiness in the shard's epoll set (each socket registered once), not on
//!   a thread: idle connections hold no threads. A dropped future is removed
//!   before it is tried again.
//!
//! An echo server:
//!
//! ```no_run
//! use spargio::io::IoBuf;
//! use spargio::net::TcpListener;
//!
//! spargio::run(|handle| async move {
//!     let listener = TcpListener::bind("127.0.0.1:7000".parse().unwrap())?;
//!     loop {
//!         let (stream, _peer, shard) = listener.accept_round_robin().await?;
//!         handle
//!             .spawn_pinned(shard, async move {
//!                 let mut buf = Vec::with_capacity(4096);
//!                 loop {
//!                     let (res, b) = stream.recv(buf).await;
//!                     let n = match res { Ok(0) | Err(_) => return, Ok(n) => n };
//!                     let (res, b) = stream.write_all(b.slice(..n)).await;
//!                     buf = b.into_inner();
//!                     buf.clear();
//!                     if res.is_err() { return; }
//!                 }
//!             })
//!             .unwrap();
//!     }
//!     #[allow(unreachable_code)]
//!     Ok::<(), std::io::Error>(())
//! })
//! .unwrap()
//! .unwrap();
//! ```

pub(crate) mod bufpool;
pub(crate) mod conn;
pub(crate) mod lane;
mod socket;
pub(crate) mod stash;
mod tcp;
mod udp;
mod unix;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

pub use bufpool::RecvStream;
pub use socket::TcpSocket;
pub use tcp::{Incoming, OwnedReadHalf, OwnedWriteHalf, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixIncoming, UnixListener, UnixStream};

/// Resolves `host` (`"name:port"`, or anything `ToSocketAddrs` accepts as a
/// string) on the blocking pool, so a slow resolver never stalls a shard.
///
/// ```
/// spargio::run(|_| async {
///     let addrs = spargio::net::lookup_host("127.0.0.1:80").await.unwrap();
///     assert_eq!(addrs, vec!["127.0.0.1:80".parse().unwrap()]);
/// })
/// .unwrap();
/// ```
///
/// # Errors
///
/// The resolver's error; an error outside a spargio runtime or after
/// shutdown began.
pub async fn lookup_host(host: impl Into<String>) -> io::Result<Vec<SocketAddr>> {
    let host = host.into();
    let handle = crate::RuntimeHandle::current()
        .ok_or_else(|| io::Error::other("lookup_host must run inside a spargio runtime task"))?;
    let job = handle
        .spawn_blocking(move || host.as_str().to_socket_addrs().map(Vec::from_iter))
        .map_err(io::Error::other)?;
    job.await.map_err(|e| io::Error::other(e.to_string()))?
}
