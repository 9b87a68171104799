//! Abandoned multishot ops leak nothing their completions carry: the fd a
//! multishot accept created, the provided buffer a multishot receive filled.
//! Each intermediate completion is an `OpEvent` that owns it; a waiter that
//! goes away drops the events it never read, and the shard drops those that
//! arrive after it left. A binary of its own, and its tests run one at a
//! time: they count the process's fds and mapped memory.
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spargio::net::{TcpListener, TcpStream};
use spargio::sys::os::open_fd_count;
use spargio::{Runtime, RuntimeBuilder};

/// A liveness bound for anything a test waits for (a hang, not a speed check).
const HANG: Duration = Duration::from_secs(60);

/// The tests of this binary count process-wide resources: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A one-shard io_uring runtime, or `None` (with the reason printed) where
/// io_uring is unavailable.
fn io_uring_runtime() -> Option<Runtime> {
    match RuntimeBuilder::new().shards(1).fallback_to_queue(false).build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            println!("SKIPPED: io_uring unavailable: {e}");
            None
        }
    }
}

/// Waits, up to [`HANG`], until the process has at most `baseline` fds open:
/// the runtime may still be reaping the last completions (and closing what
/// they carry) when the test's own handles are gone.
fn fds_return_to(baseline: usize) {
    let deadline = Instant::now() + HANG;
    loop {
        let now = open_fd_count().unwrap();
        if now <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} fds open, {baseline} before: {} leaked",
            now - baseline
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Clients that connect to `addr` until told to stop, keeping every
/// connection open, so a multishot accept always has more to take.
struct Connector {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<std::net::TcpStream>>,
}

impl Connector {
    fn start(addr: SocketAddr) -> Connector {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut clients = Vec::new();
            // Bounded: the listener's backlog and the fd limit stay far away.
            while !flag.load(Ordering::Relaxed) && clients.len() < 64 {
                match std::net::TcpStream::connect(addr) {
                    Ok(c) => clients.push(c),
                    Err(_) => break,
                }
            }
            clients
        });
        Connector { stop, thread }
    }

    fn stop(self) -> Vec<std::net::TcpStream> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Rounds of: a multishot accept takes a few connections and is dropped
/// while clients keep connecting. Connections it accepted that nobody took
/// are closed (their clients see end of stream), and once everything is
/// dropped the process's fd count is back where it started.
#[test]
fn dropped_incoming_closes_the_connections_nobody_took() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(rt) = io_uring_runtime() else { return };
    let baseline = open_fd_count().unwrap();
    const ROUNDS: usize = 20;
    const TAKEN: usize = 3;
    let mut closed = 0;
    for round in 0..ROUNDS {
        let (listener, taken, connector) = rt
            .block_on(async {
                let listener = TcpListener::bind(localhost())?;
                let connector = Connector::start(listener.local_addr()?);
                let mut incoming = listener.incoming();
                let mut taken = Vec::new();
                for _ in 0..TAKEN {
                    taken.push(incoming.next().await?);
                }
                // Let the accept take more that nobody reads, then drop it
                // while clients keep connecting.
                spargio::time::sleep(Duration::from_millis(5)).await;
                drop(incoming);
                Ok::<_, std::io::Error>((listener, taken, connector))
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let clients = connector.stop();
        let taken_peers: Vec<SocketAddr> = taken.iter().map(|s| s.peer_addr().unwrap()).collect();
        // Connections still in the backlog are reset when the listener goes;
        // those the dropped accept took must have been closed by now.
        drop(listener);
        for mut client in clients {
            if taken_peers.contains(&client.local_addr().unwrap()) {
                continue;
            }
            client.set_read_timeout(Some(HANG)).unwrap();
            match client.read(&mut [0u8; 1]) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("round {round}: a connection nobody took is still open: {other:?}"),
            }
        }
        drop(taken);
    }
    println!("{closed} accepted connections closed unread in {ROUNDS} rounds");
    assert!(
        closed > 0,
        "the accept never took a connection nobody read: nothing was tested"
    );
    drop(rt);
    fds_return_to(baseline);
}

/// The process's mapped memory (`VmSize` of `/proc/self/status`), in bytes.
fn mapped_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Buffers per receive stream, and their length: each stream's group maps
/// 4 MiB, so leaking one per round would show.
const STREAM_BUFFERS: u16 = 64;
const STREAM_BUFFER_LEN: u32 = 64 * 1024;

/// A peer that writes to its one connection as fast as it can until the
/// connection goes away.
fn flood(listener: std::net::TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        while conn.write_all(&chunk).is_ok() {}
    })
}

/// Rounds of: a multishot receive is dropped while a peer floods its socket,
/// with completions (each holding a provided buffer) queued and more
/// arriving. A new receiver on the same socket then works, and after all
/// rounds neither fds nor mapped memory have grown by what one leaked
/// buffer group per round would cost.
#[test]
fn dropped_recv_stream_gives_its_buffers_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(rt) = io_uring_runtime() else { return };
    const ROUNDS: u64 = 16;
    let group_bytes = u64::from(STREAM_BUFFERS) * u64::from(STREAM_BUFFER_LEN);
    let mut first = None;
    for round in 0..ROUNDS {
        let listener = std::net::TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = flood(listener);
        let multishot = rt
            .block_on(async move {
                let stream = TcpStream::connect(addr).await?;
                let mut out = Vec::new();
                let mut rs = stream.recv_stream_with(STREAM_BUFFERS, STREAM_BUFFER_LEN);
                for _ in 0..4 {
                    assert!(rs.next_into(&mut out).await? > 0);
                }
                let multishot = rs.is_multishot();
                // Let completions pile up unread, then drop the receiver
                // while the flood goes on.
                spargio::time::sleep(Duration::from_millis(5)).await;
                drop(rs);
                // A new receiver (and group) on the same socket goes on.
                let mut again = stream.recv_stream_with(STREAM_BUFFERS, STREAM_BUFFER_LEN);
                for _ in 0..4 {
                    assert!(again.next_into(&mut out).await? > 0);
                }
                Ok::<_, std::io::Error>(multishot)
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        peer.join().unwrap();
        if !multishot {
            println!("SKIPPED: multishot receive is unavailable here");
            return;
        }
        // After one round: thread stacks, the allocator's arenas and the
        // runtime's own tables are in place.
        if round == 0 {
            first = Some((open_fd_count().unwrap(), mapped_bytes()));
        }
    }
    let (fds, mapped) = first.unwrap();
    fds_return_to(fds);
    // Groups are unregistered on their shard after the cancelled receive's
    // final completion: wait for the memory with a bound, like the fds.
    let deadline = Instant::now() + HANG;
    let limit = mapped + group_bytes * (ROUNDS - 1) / 2;
    while mapped_bytes() > limit {
        assert!(
            Instant::now() < deadline,
            "mapped memory grew from {mapped} to {} bytes over {} rounds ({group_bytes} bytes per group)",
            mapped_bytes(),
            ROUNDS - 1
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(rt);
}
