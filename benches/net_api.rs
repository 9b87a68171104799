//! Network benchmarks: spargio (2 shards) against Tokio (2 workers) and
//! compio in the same run, over loopback TCP (see docs/BENCHMARKS.md).
//!
//! The peer is a plain echo server: std threads, one per connection, blocking
//! read/write, `TCP_NODELAY` on both sides (`common::echo`). One iteration:
//!
//! - `net_echo_rtt_256b`: 512 rounds of write 256 B, then read exactly 256 B.
//!   Its per-round-trip p50/p99 come from `cargo bench --bench latency`.
//! - `net_stream_throughput_4k_window32`: 2048 frames of 4 KiB in windows of
//!   32: write 32 frames, then read 32 × 4 KiB back. `spargio_multishot` sends
//!   each window as one 128 KiB send and receives with a multishot receive
//!   into provided buffers.
//!   `spargio_compat` (with `--features tokio-io`) runs the plain workload
//!   through `spargio::compat::Io` and Tokio's `AsyncWriteExt`/`AsyncReadExt`:
//!   the adapter's cost against the owned-buffer API.
//! - `net_stream_imbalanced_4k_hot1_light7`: 8 streams at once, each as the
//!   throughput workload; stream 0 does 2048 frames, the others 128.
//! - `net_pipeline_hotspot_rotation_4k_window32`: 8 streams × 1024 frames,
//!   window 32; after each window, a CPU stage per frame: 4000 xorshift steps
//!   if `stream == (frame / 64) % 8`, else 150.
//!
//! The echo and the plain throughput groups run the same spargio workload in
//! each ring mode ([`RingMode`]): `spargio` (default, `COOP_TASKRUN` only),
//! `spargio_defer_taskrun` (`io_uring_throughput_mode(false)`),
//! `spargio_sqpoll` (`io_uring_throughput_mode(true)`) and `spargio_queue`
//! (the Queue backend with its epoll readiness driver: what runs where a
//! seccomp profile denies io_uring). A mode whose runtime cannot be built
//! here is skipped with a `SKIPPED: <function>: <error>` line.
//!
//! The two multi-stream groups run spargio twice: `spargio` pins each
//! stream's task to the stream's shard; `spargio_stealable` queues it there
//! as stealable work (an idle shard may take it; its ops are still steered to
//! the stream's ring).
//!
//! `compio` (every group): compio 0.19 on its io_uring driver, the plain
//! path (`write_all` / `read_exact` per frame with owned buffers handed
//! back), driven by commands like the others. compio is thread-per-core: a
//! runtime's tasks never leave its thread, and an idle runtime cannot steal
//! from a busy one. The echo and the plain stream run one runtime on one
//! thread. The two multi-stream groups run a runtime on each of 2 threads
//! (as many as spargio's shards and Tokio's workers), stream `i` on thread
//! `i % 2` as spargio's pinned streams, one task per stream; an iteration
//! ends when both threads are done.
#![forbid(unsafe_code)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::echo::{
    CompioEcho, CompioHarness, RTT_ROUNDS, RingMode, SpargioHarness, TokioEcho, TokioHarness,
    compio_available, compio_connect, compio_harness, echo_server, spargio_connect, spargio_harness,
    spargio_rtt, tokio_connect, tokio_harness,
};
use common::harness::bench_batches;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FRAME: usize = 4096;
const WINDOW: usize = 32;
const STREAM_FRAMES: usize = 2048;
const STREAMS: usize = 8;
const HOT_FRAMES: usize = 2048;
const LIGHT_FRAMES: usize = 128;
const PIPELINE_FRAMES: usize = 1024;

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

/// A spargio harness in `mode` whose command `iters` runs `batch` `iters`
/// times. `$SPIN_US` sets `spin_before_park` (experiments).
///
/// # Panics
///
/// If the runtime cannot be built (a mode is only measured once
/// [`RingMode::available`] has built it here), or `$SPIN_US` is not a number.
fn spargio_batches<S, F, Fut>(mode: RingMode, setup: S, batch: F) -> SpargioHarness<u64, ()>
where
    S: Future + Send + 'static,
    S::Output: Send + Sync + 'static,
    F: Fn(Arc<S::Output>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut builder = mode.builder();
    if let Ok(us) = std::env::var("SPIN_US") {
        builder = builder.spin_before_park(Duration::from_micros(us.parse().expect("SPIN_US: microseconds")));
    }
    let batch = Arc::new(batch);
    spargio_harness(builder, setup, move |state, iters: u64| {
        let batch = batch.clone();
        async move {
            for _ in 0..iters {
                batch(state.clone()).await;
            }
        }
    })
    .expect("build the spargio harness")
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

/// The plain workload through the poll-based adapter (`compat::Io`, feature
/// `tokio-io`) and Tokio's `AsyncWriteExt`/`AsyncReadExt`, as hyper or a
/// codec would drive it: what the adapter costs against [`spargio_windows`].
#[cfg(feature = "tokio-io")]
async fn spargio_compat_windows(io: &mut spargio::compat::Io<spargio::net::TcpStream>, shape: Shape) {
    let frame = vec![1u8; FRAME];
    let mut back = vec![0u8; FRAME];
    let mut done = 0;
    while done < shape.frames() {
        for _ in 0..WINDOW {
            io.write_all(&frame).await.unwrap();
        }
        io.flush().await.unwrap();
        for _ in 0..WINDOW {
            io.read_exact(&mut back).await.unwrap();
        }
        done += WINDOW;
    }
}

/// The batched variant: one send per window, a multishot receive (then the
/// CPU stage of a pipeline, as in [`spargio_windows`]).
async fn spargio_windows_multishot(
    s: &spargio::net::TcpStream,
    rs: &mut spargio::net::RecvStream,
    shape: Shape,
) {
    let mut window = vec![1u8; FRAME * WINDOW];
    let mut got = Vec::with_capacity(FRAME * WINDOW);
    let mut done = 0;
    while done < shape.frames() {
        let (res, w) = s.write_all(window).await;
        res.unwrap();
        window = w;
        got.clear();
        while got.len() < FRAME * WINDOW {
            assert!(rs.next_into(&mut got).await.unwrap() > 0);
        }
        if let Shape::Pipeline { stream } = shape {
            for k in 0..WINDOW {
                cpu_stage((done + k) as u64, stage_steps(stream, done + k));
            }
        }
        done += WINDOW;
    }
}

/// A stream with its multishot receiver, lent to one batch at a time.
type MultishotStream = (
    spargio::net::TcpStream,
    std::sync::Mutex<Option<spargio::net::RecvStream>>,
);

/// Runs `shape` on `stream` with its receiver (see [`MultishotStream`]).
async fn spargio_multishot_batch(stream: &MultishotStream, shape: Shape) {
    let (s, rs) = stream;
    let mut receiver = rs.lock().unwrap().take().expect("one batch at a time");
    spargio_windows_multishot(s, &mut receiver, shape).await;
    *rs.lock().unwrap() = Some(receiver);
}

/// Connects to `addr` with a multishot receiver of 64 × 16 KiB buffers.
async fn spargio_multishot_connect(addr: SocketAddr) -> MultishotStream {
    let s = spargio_connect(addr).await;
    let rs = s.recv_stream_with(64, 16 * 1024);
    (s, std::sync::Mutex::new(Some(rs)))
}

/// Benchmarks the same spargio workload once per ring mode in `modes`, each
/// under its mode's function name; `harness(mode)` builds it on first use.
fn bench_ring_modes(
    g: &mut BenchmarkGroup<'_, WallTime>,
    group: &str,
    modes: &[RingMode],
    harness: impl Fn(RingMode) -> SpargioHarness<u64, ()>,
) {
    for &mode in modes {
        bench_batches(
            g,
            group,
            mode.function_name(),
            || harness(mode),
            |h, iters| h.call(iters),
        );
    }
}

// === tokio ===

/// A Tokio harness whose command `iters` runs `batch` `iters` times, each
/// taking the state and handing it back.
fn tokio_batches<S, T, F, Fut>(setup: S, batch: F) -> TokioHarness<u64, ()>
where
    S: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let batch = Arc::new(batch);
    tokio_harness(setup, move |mut state, iters: u64| {
        let batch = batch.clone();
        async move {
            for _ in 0..iters {
                state = batch(state).await;
            }
            (state, ())
        }
    })
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

// === compio ===

/// A compio harness on `threads` threads ([`compio_harness`]) whose command
/// `iters` runs `batch` `iters` times on every thread, each taking the
/// thread's state and handing it back.
///
/// # Panics
///
/// If a compio runtime cannot be built (the `compio` functions are only
/// measured once [`compio_available`] has built one here).
fn compio_batches<S, SFut, T, F, Fut>(threads: usize, setup: S, batch: F) -> CompioHarness<u64, ()>
where
    S: Fn(usize) -> SFut + Clone + Send + 'static,
    SFut: Future<Output = T>,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T>,
{
    compio_harness(threads, setup, move |mut state, iters: u64| {
        let batch = batch.clone();
        async move {
            for _ in 0..iters {
                state = batch(state).await;
            }
            (state, ())
        }
    })
    .expect("build the compio harness")
}

/// [`tokio_windows`] on compio: one `write_all` per frame, one `read_exact`
/// per frame, each taking its owned buffer and handing it back.
async fn compio_windows(s: &mut compio::net::TcpStream, shape: Shape) {
    use compio::io::{AsyncReadExt, AsyncWriteExt};
    let mut frame = vec![1u8; FRAME];
    // `read_exact` fills the buffer's capacity: exactly `FRAME` here.
    let mut back = vec![0u8; FRAME];
    let mut done = 0;
    while done < shape.frames() {
        for _ in 0..WINDOW {
            let compio::BufResult(res, f) = s.write_all(frame).await;
            res.unwrap();
            frame = f;
        }
        for _ in 0..WINDOW {
            let compio::BufResult(res, b) = s.read_exact(back).await;
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

// === groups ===

fn net_echo_rtt_256b(c: &mut Criterion, addr: SocketAddr, modes: &[RingMode], compio: bool) {
    const GROUP: &str = "net_echo_rtt_256b";
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Elements(RTT_ROUNDS as u64));
    bench_batches(
        &mut g,
        GROUP,
        "tokio",
        || {
            tokio_batches(TokioEcho::connect(addr), |mut client| async move {
                client.rtt().await;
                client
            })
        },
        |h, iters| h.call(iters),
    );
    bench_ring_modes(&mut g, GROUP, modes, |mode| {
        spargio_batches(
            mode,
            spargio_connect(addr),
            |s| async move { spargio_rtt(&s).await },
        )
    });
    if compio {
        bench_batches(
            &mut g,
            GROUP,
            "compio",
            || {
                compio_batches(
                    1,
                    move |_| CompioEcho::connect(addr),
                    |mut client| async move {
                        client.rtt().await;
                        client
                    },
                )
            },
            |h, iters| {
                h.call(iters);
            },
        );
    }
    g.finish();
}

fn net_stream_throughput_4k_window32(c: &mut Criterion, addr: SocketAddr, modes: &[RingMode], compio: bool) {
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
            tokio_batches(tokio_connect(addr), move |mut s| async move {
                tokio_windows(&mut s, shape).await;
                s
            })
        },
        |h, iters| h.call(iters),
    );
    bench_ring_modes(&mut g, GROUP, modes, |mode| {
        spargio_batches(mode, spargio_connect(addr), move |s| async move {
            spargio_windows(&s, shape).await;
        })
    });
    bench_batches(
        &mut g,
        GROUP,
        "spargio_multishot",
        || {
            spargio_batches(
                RingMode::Default,
                spargio_multishot_connect(addr),
                move |state| async move {
                    spargio_multishot_batch(&state, shape).await;
                },
            )
        },
        |h, iters| h.call(iters),
    );
    #[cfg(feature = "tokio-io")]
    bench_batches(
        &mut g,
        GROUP,
        "spargio_compat",
        || {
            let setup = async move {
                let io = spargio::compat::Io::new(spargio_connect(addr).await);
                std::sync::Mutex::new(Some(io))
            };
            spargio_batches(RingMode::Default, setup, move |state| async move {
                // Taken out for the batch (batches run one at a time): no
                // guard is held across an await.
                let mut io = state.lock().unwrap().take().expect("one batch at a time");
                spargio_compat_windows(&mut io, shape).await;
                *state.lock().unwrap() = Some(io);
            })
        },
        |h, iters| h.call(iters),
    );
    if compio {
        bench_batches(
            &mut g,
            GROUP,
            "compio",
            || {
                compio_batches(
                    1,
                    move |_| compio_connect(addr),
                    move |mut s| async move {
                        compio_windows(&mut s, shape).await;
                        s
                    },
                )
            },
            |h, iters| {
                h.call(iters);
            },
        );
    }
    g.finish();
}

/// Runs `run(i, stream)` for every `(shard, stream)` as a task placed by
/// `placement(shard)`, all at once, and waits for them all.
async fn run_streams<T, F, Fut>(
    streams: &[(usize, Arc<T>)],
    placement: fn(usize) -> spargio::TaskPlacement,
    run: F,
) where
    T: Send + Sync + 'static,
    F: Fn(usize, Arc<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = spargio::RuntimeHandle::current().unwrap();
    let tasks: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, (shard, s))| {
            handle
                .spawn_with_placement(placement(*shard), run(i, s.clone()))
                .unwrap()
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A multi-stream group: `shape(i)` for stream `i`, all streams at once.
fn multi_stream(
    c: &mut Criterion,
    addr: SocketAddr,
    group: &'static str,
    shape: fn(usize) -> Shape,
    bytes: u64,
    compio: bool,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes));
    bench_batches(
        &mut g,
        group,
        "tokio",
        || {
            tokio_batches(
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
        |h, iters| h.call(iters),
    );
    // `spargio`: each stream's task pinned to the stream's shard.
    // `spargio_stealable`: queued there, but stealable; a stolen task's ops
    // are still steered to the stream's ring.
    type Placement = fn(usize) -> spargio::TaskPlacement;
    let variants: [(&str, Placement, bool); 3] = [
        ("spargio", spargio::TaskPlacement::Pinned, true),
        (
            "spargio_stealable",
            spargio::TaskPlacement::StealablePreferred,
            true,
        ),
        (
            "spargio_unbound",
            spargio::TaskPlacement::StealablePreferred,
            false,
        ),
    ];
    for (name, placement, bind) in variants {
        bench_batches(
            &mut g,
            group,
            name,
            || {
                spargio_batches(
                    RingMode::Default,
                    async move {
                        // Connections are spread over the shards in turn, like an
                        // accept loop would hand them out.
                        let handle = spargio::RuntimeHandle::current().unwrap();
                        let mut v = Vec::new();
                        for i in 0..STREAMS {
                            let s = spargio_connect(addr).await;
                            let s = if bind {
                                s.bind_to_shard(&handle, i % 2).unwrap()
                            } else {
                                s
                            };
                            v.push((i % 2, Arc::new(s)));
                        }
                        v
                    },
                    move |streams| async move {
                        run_streams(&streams, placement, move |i, s| async move {
                            spargio_windows(&s, shape(i)).await
                        })
                        .await
                    },
                )
            },
            |h, iters| h.call(iters),
        );
    }
    // `spargio_multishot`: pinned as `spargio`, each window one send and a
    // multishot receive (the batched API, reported separately).
    bench_batches(
        &mut g,
        group,
        "spargio_multishot",
        || {
            spargio_batches(
                RingMode::Default,
                async move {
                    let handle = spargio::RuntimeHandle::current().unwrap();
                    let mut v = Vec::new();
                    for i in 0..STREAMS {
                        let shard = i % 2;
                        let task = handle
                            .spawn_pinned(shard, spargio_multishot_connect(addr))
                            .unwrap();
                        v.push((shard, Arc::new(task.await.unwrap())));
                    }
                    v
                },
                move |streams| async move {
                    run_streams(&streams, spargio::TaskPlacement::Pinned, move |i, s| async move {
                        spargio_multishot_batch(&s, shape(i)).await
                    })
                    .await
                },
            )
        },
        |h, iters| h.call(iters),
    );
    // `compio`: a compio runtime on each of 2 threads (as many as spargio's
    // shards and Tokio's workers), stream `i` on thread `i % 2` as spargio's
    // pinned streams, one task per stream. A thread cannot take another's
    // work: an iteration ends when the slower thread is done.
    if compio {
        bench_batches(
            &mut g,
            group,
            "compio",
            || {
                compio_batches(
                    2,
                    move |thread| async move {
                        let mut v = Vec::new();
                        for i in (thread..STREAMS).step_by(2) {
                            v.push((i, compio_connect(addr).await));
                        }
                        v
                    },
                    move |streams| async move {
                        let tasks: Vec<_> = streams
                            .into_iter()
                            .map(|(i, mut s)| {
                                compio::runtime::spawn(async move {
                                    compio_windows(&mut s, shape(i)).await;
                                    (i, s)
                                })
                            })
                            .collect();
                        let mut back = Vec::new();
                        for t in tasks {
                            back.push(t.await.expect("a compio stream task panicked"));
                        }
                        back
                    },
                )
            },
            |h, iters| {
                h.call(iters);
            },
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let addr = echo_server();
    let modes = RingMode::available();
    let compio = compio_available();
    net_echo_rtt_256b(c, addr, &modes, compio);
    net_stream_throughput_4k_window32(c, addr, &modes, compio);
    let imbalanced_bytes = ((HOT_FRAMES + (STREAMS - 1) * LIGHT_FRAMES) * FRAME) as u64;
    multi_stream(
        c,
        addr,
        "net_stream_imbalanced_4k_hot1_light7",
        |i| Shape::Windows {
            frames: if i == 0 { HOT_FRAMES } else { LIGHT_FRAMES },
        },
        imbalanced_bytes,
        compio,
    );
    multi_stream(
        c,
        addr,
        "net_pipeline_hotspot_rotation_4k_window32",
        |stream| Shape::Pipeline { stream },
        (STREAMS * PIPELINE_FRAMES * FRAME) as u64,
        compio,
    );
}

criterion_group! {
    name = net;
    config = Criterion::default();
    targets = benches
}
criterion_main!(net);
