//! Echo round trip (256 B) and stream throughput over loopback TCP on
//! spargio's Queue backend (the fallback where io_uring is refused: epoll
//! readiness) against Tokio, and spargio on io_uring where it is available,
//! in the same run. The peer is a plain std echo server (a thread per
//! connection). Numbers only; nothing is asserted.
//!
//! ```text
//! cargo run --release --example queue_echo_bench [rounds] [stream_mib] [queue|tokio|uring]
//! ```
//!
//! Each pass prints the Queue backend's ratios to Tokio (mean and p50 round
//! trip: lower is better; stream time: lower is better). The third argument
//! runs one runtime alone (for `strace -c` or `perf record`).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use spargio::net::TcpStream;
use spargio::{Backend, RuntimeBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MSG: usize = 256;
const CHUNK: usize = 64 * 1024;

fn echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

struct Result_ {
    rtt: Vec<Duration>,
    stream: Duration,
}

/// Mean RTT, p50 RTT and stream time, for the ratios.
type Summary = (f64, f64, f64);

fn report(name: &str, r: &mut Result_, stream_bytes: usize) -> Summary {
    r.rtt.sort_unstable();
    let pct = |p: f64| r.rtt[((r.rtt.len() as f64 * p) as usize).min(r.rtt.len() - 1)];
    let mean = r.rtt.iter().sum::<Duration>() / r.rtt.len() as u32;
    let mibs = stream_bytes as f64 / (1 << 20) as f64 / r.stream.as_secs_f64();
    println!(
        "{name:<22} rtt mean {:>6.1} µs  p50 {:>6.1} µs  p99 {:>6.1} µs   stream {:>7.0} MiB/s",
        mean.as_secs_f64() * 1e6,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        mibs
    );
    (
        mean.as_secs_f64(),
        pct(0.50).as_secs_f64(),
        r.stream.as_secs_f64(),
    )
}

fn spargio_run(backend: Backend, addr: SocketAddr, rounds: usize, stream_bytes: usize) -> Option<Result_> {
    let rt = RuntimeBuilder::new()
        .shards(2)
        .backend(backend)
        .fallback_to_queue(false)
        .build()
        .ok()?;
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let client = TcpStream::connect(addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        let mut rtt = Vec::with_capacity(rounds);
        let (mut out, mut back) = (vec![7u8; MSG], vec![0u8; MSG]);
        for i in 0..rounds + rounds / 10 {
            let t = Instant::now();
            let (res, b) = client.write_all(out).await;
            res.unwrap();
            out = b;
            let (res, b) = client.read_exact(back).await;
            res.unwrap();
            back = b;
            if i >= rounds / 10 {
                rtt.push(t.elapsed());
            }
        }
        // Stream: one task writes, another reads the echo back.
        let (rd, wr) = client.into_split();
        let t = Instant::now();
        let writer = handle
            .spawn_pinned(1, async move {
                let mut buf = vec![1u8; CHUNK];
                let mut sent = 0;
                while sent < stream_bytes {
                    let (res, b) = wr.write_all(buf).await;
                    res.unwrap();
                    buf = b;
                    sent += CHUNK;
                }
            })
            .unwrap();
        let mut got = 0;
        let mut buf = Vec::with_capacity(CHUNK);
        while got < stream_bytes {
            buf.clear();
            let (res, b) = rd.recv(buf).await;
            got += res.unwrap();
            buf = b;
        }
        writer.await.unwrap();
        Result_ {
            rtt,
            stream: t.elapsed(),
        }
    })
    .ok()
}

fn tokio_run(addr: SocketAddr, rounds: usize, stream_bytes: usize) -> Result_ {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        let mut rtt = Vec::with_capacity(rounds);
        let (out, mut back) = (vec![7u8; MSG], vec![0u8; MSG]);
        for i in 0..rounds + rounds / 10 {
            let t = Instant::now();
            client.write_all(&out).await.unwrap();
            client.read_exact(&mut back).await.unwrap();
            if i >= rounds / 10 {
                rtt.push(t.elapsed());
            }
        }
        let (mut rd, mut wr) = client.into_split();
        let t = Instant::now();
        let writer = tokio::spawn(async move {
            let buf = vec![1u8; CHUNK];
            let mut sent = 0;
            while sent < stream_bytes {
                wr.write_all(&buf).await.unwrap();
                sent += CHUNK;
            }
            wr
        });
        let mut got = 0;
        let mut buf = vec![0u8; CHUNK];
        while got < stream_bytes {
            got += rd.read(&mut buf).await.unwrap();
        }
        drop(writer.await.unwrap());
        Result_ {
            rtt,
            stream: t.elapsed(),
        }
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let stream_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let stream_bytes = stream_mib << 20;
    let addr = echo_server();
    println!(
        "echo {MSG} B x {rounds} rounds; stream {stream_mib} MiB in {} KiB writes",
        CHUNK / 1024
    );
    let only = args.next();
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    for _ in 0..2 {
        let mut queue = None;
        let mut tokio = None;
        if runs("queue")
            && let Some(mut r) = spargio_run(Backend::Queue, addr, rounds, stream_bytes)
        {
            queue = Some(report("spargio Queue (epoll)", &mut r, stream_bytes));
        }
        if runs("tokio") {
            tokio = Some(report(
                "tokio",
                &mut tokio_run(addr, rounds, stream_bytes),
                stream_bytes,
            ));
        }
        if runs("uring") {
            match spargio_run(Backend::IoUring, addr, rounds, stream_bytes) {
                Some(mut r) => drop(report("spargio io_uring", &mut r, stream_bytes)),
                None => println!("spargio io_uring       unavailable here"),
            }
        }
        if let (Some(q), Some(t)) = (queue, tokio) {
            println!(
                "Queue / tokio          rtt mean {:.2}x  p50 {:.2}x   stream time {:.2}x",
                q.0 / t.0,
                q.1 / t.1,
                q.2 / t.2
            );
        }
    }
}
