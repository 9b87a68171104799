//! Network benchmarks: spargio (2 shards) against Tokio (2 workers) in the
//! same run, over loopback TCP (see docs/BENCHMARKS.md).
//!
//! The peer is a plain echo server: std threads, one per connection, blocking
//! read/write, `TCP_NODELAY` on both sides. One iteration:
//!
//! - `net_echo_rtt_256b`: 512 rounds of write 256 B, then read exactly 256 B.
//! - `net_stream_throughput_4k_window32`: 2048 frames of 4 KiB in windows of
//!   32: write 32 frames, then read 32 × 4 KiB back. `spargio_multishot` sends
//!   each window as one 128 KiB send and receives with a multishot receive
//!   into provided buffers.
//! - `net_stream_imbalanced_4k_hot1_light7`: 8 streams at once, each as the
//!   throughput workload; stream 0 does 2048 frames, the others 128.
//! - `net_pipeline_hotspot_rotation_4k_window32`: 8 streams × 1024 frames,
//!   window 32; after each window, a CPU stage per frame: 4000 xorshift steps
//!   if `stream == (frame / 64) % 8`, else 150.
//!
//! The two multi-stream groups run spargio twice: `spargio` pins each
//! stream's task to the stream's shard; `spargio_stealable` queues it there
//! as stealable work (an idle shard may take it; its ops are still steered to
//! the stream's ring).
#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::harness::{DriverEnd, bench_batches, driver};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RTT_ROUNDS: usize = 512;
const RTT_MSG: usize = 256;
const FRAME: usize = 4096;
const WINDOW: usize = 32;
const STREAM_FRAMES: usize = 2048;
const STREAMS: usize = 8;
const HOT_FRAMES: usize = 2048;
const LIGHT_FRAMES: usize = 128;
const PIPELINE_FRAMES: usize = 1024;

/// Starts the loopback echo server (one std thread per connection).
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

/// The CPU stage of the pipeline workload.
fn cpu_stage(seed: u64, steps: u32) -> u64 {
    let mut x = seed | 1;
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

fn stage_steps(stream: usize, frame: usize) -> u32 {
    if stream == (frame / 64) % STREAMS {
        4000
    } else {
        150
    }
}

/// What one stream of a multi-stream workload does.
#[derive(Clone, Copy)]
enum Shape {
    /// Windows of 32 frames, `frames` in all.
    Windows { frames: usize },
    /// Windows of 32 frames, then the CPU stage for each frame.
    Pipeline { stream: usize },
}

impl Shape {
    fn frames(self) -> usize {
        match self {
            Shape::Windows { frames } => frames,
            Shape::Pipeline { .. } => PIPELINE_FRAMES,
        }
    }
}

// === spargio ===

struct SpargioHarness {
    driver: common::harness::Driver<u64, ()>,
    _rt: spargio::Runtime,
}

async fn spargio_connect(addr: SocketAddr) -> spargio::net::TcpStream {
    let s = spargio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Builds a 2-shard runtime whose driver task (on shard 0) runs `batch` per iteration.
fn spargio_harness<S, F, Fut>(setup: S, batch: F) -> SpargioHarness
where
    S: std::future::Future + Send + 'static,
    S::Output: Send + Sync + 'static,
    F: Fn(std::sync::Arc<S::Output>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut b = spargio::RuntimeBuilder::new().shards(2);
    if let Ok(us) = std::env::var("SPIN_US") {
        b = b.spin_before_park(std::time::Duration::from_micros(us.parse().unwrap()));
    }
    let rt = b.build().unwrap();
    let (drv, mut end): (_, DriverEnd<u64, ()>) = driver();
    rt.handle()
        .spawn_pinned(0, async move {
            let state = std::sync::Arc::new(setup.await);
            while let Some(iters) = end.next().await {
                for _ in 0..iters {
                    batch(state.clone()).await;
                }
                end.reply(());
            }
        })
        .unwrap();
    SpargioHarness { driver: drv, _rt: rt }
}

async fn spargio_rtt(s: &spargio::net::TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let msg: Vec<u8> = vec![7u8; RTT_MSG];
    let mut msg = Some(msg);
    for _ in 0..RTT_ROUNDS {
        let (res, m) = s.write_all(msg.take().unwrap()).await;
        res.unwrap();
        msg = Some(m);
        let (res, b) = s.read_exact(buf).await;
        res.unwrap();
        buf = b;
    }
    buf
}

async fn spargio_windows(s: &spargio::net::TcpStream, shape: Shape) {
    let mut frame = vec![1u8; FRAME];
    let mut back = vec![0u8; FRAME];
    let mut done = 0;
    while done < shape.frames() {
        for _ in 0..WINDOW {
            let (res, f) = s.write_all(frame).await;
            res.unwrap();
            frame = f;
        }
        for _ in 0..WINDOW {
            let (res, b) = s.read_exact(back).await;
            res.unwrap();
            back = b;
        }
        if let Shape::Pipeline { stream } = shape {
            for k in 0..WINDOW {
                cpu_stage((done + k) as u64, stage_steps(stream, done + k));
            }
        }
        done += WINDOW;
    }
}

/// The batched variant: one send per window, a multishot receive.
async fn spargio_windows_multishot(s: &spargio::net::TcpStream, rs: &mut spargio::net::RecvStream) {
    let mut window = vec![1u8; FRAME * WINDOW];
    let mut got = Vec::with_capacity(FRAME * WINDOW);
    for _ in 0..STREAM_FRAMES / WINDOW {
        let (res, w) = s.write_all(window).await;
        res.unwrap();
        window = w;
        got.clear();
        while got.len() < FRAME * WINDOW {
            assert!(rs.next_into(&mut got).await.unwrap() > 0);
        }
    }
}

// === tokio ===

struct TokioHarness {
    driver: common::harness::Driver<u64, ()>,
    _rt: tokio::runtime::Runtime,
}

async fn tokio_connect(addr: SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn tokio_harness<S, F, Fut, T>(setup: S, batch: F) -> TokioHarness
where
    S: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (drv, mut end): (_, DriverEnd<u64, ()>) = driver();
    rt.spawn(async move {
        let mut state = Some(setup.await);
        while let Some(iters) = end.next().await {
            for _ in 0..iters {
                state = Some(batch(state.take().unwrap()).await);
            }
            end.reply(());
        }
    });
    TokioHarness { driver: drv, _rt: rt }
}

async fn tokio_rtt(s: &mut tokio::net::TcpStream, buf: &mut [u8]) {
    let msg = [7u8; RTT_MSG];
    for _ in 0..RTT_ROUNDS {
        s.write_all(&msg).await.unwrap();
        s.read_exact(buf).await.unwrap();
    }
}

async fn tokio_windows(s: &mut tokio::net::TcpStream, shape: Shape) {
    let frame = vec![1u8; FRAME];
    let mut back = vec![0u8; FRAME];
    let mut done = 0;
    while done < shape.frames() {
        for _ in 0..WINDOW {
            s.write_all(&frame).await.unwrap();
        }
        for _ in 0..WINDOW {
            s.read_exact(&mut back).await.unwrap();
        }
        if let Shape::Pipeline { stream } = shape {
            for k in 0..WINDOW {
                cpu_stage((done + k) as u64, stage_steps(stream, done + k));
            }
        }
        done += WINDOW;
    }
}

// === groups ===

fn net_echo_rtt_256b(c: &mut Criterion, addr: SocketAddr) {
    const GROUP: &str = "net_echo_rtt_256b";
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Elements(RTT_ROUNDS as u64));
    bench_batches(
        &mut g,
        GROUP,
        "tokio",
        || {
            tokio_harness(
                async move { (tokio_connect(addr).await, vec![0u8; RTT_MSG]) },
                |(mut s, mut buf)| async move {
                    tokio_rtt(&mut s, &mut buf).await;
                    (s, buf)
                },
            )
        },
        |h, iters| h.driver.call(iters),
    );
    bench_batches(
        &mut g,
        GROUP,
        "spargio",
        || {
            spargio_harness(async move { spargio_connect(addr).await }, |s| async move {
                spargio_rtt(&s, vec![0u8; RTT_MSG]).await;
            })
        },
        |h, iters| h.driver.call(iters),
    );
    g.finish();
}

fn net_stream_throughput_4k_window32(c: &mut Criterion, addr: SocketAddr) {
    const GROUP: &str = "net_stream_throughput_4k_window32";
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Bytes((STREAM_FRAMES * FRAME) as u64));
    let shape = Shape::Windows {
        frames: STREAM_FRAMES,
    };
    bench_batches(
        &mut g,
        GROUP,
        "tokio",
        || {
            tokio_harness(
                async move { tokio_connect(addr).await },
                move |mut s| async move {
                    tokio_windows(&mut s, shape).await;
                    s
                },
            )
        },
        |h, iters| h.driver.call(iters),
    );
    bench_batches(
        &mut g,
        GROUP,
        "spargio",
        || {
            spargio_harness(async move { spargio_connect(addr).await }, move |s| async move {
                spargio_windows(&s, shape).await;
            })
        },
        |h, iters| h.driver.call(iters),
    );
    bench_batches(
        &mut g,
        GROUP,
        "spargio_multishot",
        || {
            spargio_harness(
                async move {
                    let s = spargio_connect(addr).await;
                    let rs = s.recv_stream_with(64, 16 * 1024);
                    (s, std::sync::Mutex::new(Some(rs)))
                },
                |state| async move {
                    let (s, rs) = &*state;
                    let mut stream = rs.lock().unwrap().take().unwrap();
                    spargio_windows_multishot(s, &mut stream).await;
                    *rs.lock().unwrap() = Some(stream);
                },
            )
        },
        |h, iters| h.driver.call(iters),
    );
    g.finish();
}

/// A multi-stream group: `shape(i)` for stream `i`, all streams at once.
fn multi_stream(
    c: &mut Criterion,
    addr: SocketAddr,
    group: &'static str,
    shape: fn(usize) -> Shape,
    bytes: u64,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes));
    bench_batches(
        &mut g,
        group,
        "tokio",
        || {
            tokio_harness(
                async move {
                    let mut v = Vec::new();
                    for _ in 0..STREAMS {
                        v.push(tokio_connect(addr).await);
                    }
                    v
                },
                move |streams| async move {
                    let tasks: Vec<_> = streams
                        .into_iter()
                        .enumerate()
                        .map(|(i, mut s)| {
                            tokio::spawn(async move {
                                tokio_windows(&mut s, shape(i)).await;
                                s
                            })
                        })
                        .collect();
                    let mut back = Vec::new();
                    for t in tasks {
                        back.push(t.await.unwrap());
                    }
                    back
                },
            )
        },
        |h, iters| h.driver.call(iters),
    );
    // `spargio`: each stream's task pinned to the stream's shard.
    // `spargio_stealable`: queued there, but stealable; a stolen task's ops
    // are still steered to the stream's ring.
    type Placement = fn(usize) -> spargio::TaskPlacement;
    let variants: [(&str, Placement); 2] = [
        ("spargio", spargio::TaskPlacement::Pinned),
        ("spargio_stealable", spargio::TaskPlacement::StealablePreferred),
    ];
    for (name, placement) in variants {
        bench_batches(
            &mut g,
            group,
            name,
            || {
                spargio_harness(
                    async move {
                        // Connections are spread over the shards in turn, like an
                        // accept loop would hand them out.
                        let handle = spargio::RuntimeHandle::current().unwrap();
                        let mut v = Vec::new();
                        for i in 0..STREAMS {
                            let s = spargio_connect(addr).await;
                            v.push(std::sync::Arc::new(s.bind_to_shard(&handle, i % 2).unwrap()));
                        }
                        v
                    },
                    move |streams| async move {
                        let handle = spargio::RuntimeHandle::current().unwrap();
                        let tasks: Vec<_> = streams
                            .iter()
                            .enumerate()
                            .map(|(i, s)| {
                                let s = s.clone();
                                handle
                                    .spawn_with_placement(placement(s.shard().unwrap()), async move {
                                        spargio_windows(&s, shape(i)).await
                                    })
                                    .unwrap()
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    },
                )
            },
            |h, iters| h.driver.call(iters),
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let addr = echo_server();
    net_echo_rtt_256b(c, addr);
    net_stream_throughput_4k_window32(c, addr);
    let imbalanced_bytes = ((HOT_FRAMES + (STREAMS - 1) * LIGHT_FRAMES) * FRAME) as u64;
    multi_stream(
        c,
        addr,
        "net_stream_imbalanced_4k_hot1_light7",
        |i| Shape::Windows {
            frames: if i == 0 { HOT_FRAMES } else { LIGHT_FRAMES },
        },
        imbalanced_bytes,
    );
    multi_stream(
        c,
        addr,
        "net_pipeline_hotspot_rotation_4k_window32",
        |stream| Shape::Pipeline { stream },
        (STREAMS * PIPELINE_FRAMES * FRAME) as u64,
    );
}

criterion_group! {
    name = net;
    config = Criterion::default();
    targets = benches
}
criterion_main!(net);
