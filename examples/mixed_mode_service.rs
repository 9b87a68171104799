//! A Tokio service that keeps its Tokio front end and moves its hot path into
//! spargio through `spargio::boundary`.
//!
//! - **Front end (Tokio):** a TCP line server on `127.0.0.1`. Each line
//!   `hash <seed> <rounds>` is a request; the answer is `ok <checksum>` or
//!   `err <reason>`.
//! - **Hot path (spargio):** a dispatcher task receives the requests from the
//!   boundary and gives each its own stealable task, which fans the CPU work
//!   out over stealable subtasks (idle shards take them) and answers.
//! - **Load:** Tokio clients in the same program open connections, send
//!   requests, check a sample of the answers against a local computation,
//!   and record latencies. The program ends by itself and prints a summary.
//!
//! ```text
//! cargo run --release --example mixed_mode_service
//! ```
#![forbid(unsafe_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use spargio::boundary::{self, BoundaryClient, BoundaryServer};
use spargio::{RuntimeBuilder, RuntimeHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Concurrent client connections.
const CONNECTIONS: usize = 16;
/// Requests each connection sends, one after another.
const REQUESTS_PER_CONNECTION: usize = 100;
/// Subtasks each request fans out to.
const BRANCHES: u64 = 8;
/// Requests the boundary queues before callers wait for room.
const BOUNDARY_CAPACITY: usize = 64;
/// How long the front end waits for spargio before answering `err`.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Steps of work per branch (smaller in unoptimised builds, so the example
/// finishes in a few seconds either way).
fn rounds() -> u32 {
    if cfg!(debug_assertions) { 1_000 } else { 20_000 }
}

/// One request, as it crosses the boundary.
#[derive(Clone, Copy, Debug)]
struct Job {
    seed: u64,
    rounds: u32,
}

/// The CPU kernel: an LCG mixed with a xorshift, `n` steps.
fn mix(seed: u64, n: u32) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in 0..u64::from(n) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407 ^ i);
        x ^= x >> 29;
    }
    x
}

/// The whole job, computed on one thread (to check the answers).
fn job_checksum(job: Job) -> u64 {
    (0..BRANCHES).fold(0, |acc, b| acc ^ mix(job.seed.wrapping_add(b), job.rounds))
}

/// spargio side: take requests off the boundary; each gets a stealable task
/// that fans out over `BRANCHES` stealable subtasks.
async fn dispatcher(handle: RuntimeHandle, server: BoundaryServer<Job, u64>) -> usize {
    let mut dispatched = 0;
    while let Ok(request) = server.recv().await {
        let (job, responder) = request.into_parts();
        let h = handle.clone();
        let spawned = handle.spawn_stealable(async move {
            if responder.is_canceled() {
                return; // The caller gave up while the request was queued.
            }
            let branches: Vec<_> = (0..BRANCHES)
                .filter_map(|b| {
                    h.spawn_stealable(async move { mix(job.seed.wrapping_add(b), job.rounds) })
                        .ok()
                })
                .collect();
            if branches.len() as u64 != BRANCHES {
                return; // Overloaded: dropping the responder answers `Canceled`.
            }
            let mut sum = 0;
            for branch in branches {
                match branch.await {
                    Ok(v) => sum ^= v,
                    Err(_) => return,
                }
            }
            let _ = responder.respond(sum);
        });
        if spawned.is_ok() {
            dispatched += 1;
        }
    }
    dispatched
}

/// Tokio side: one connection of the line server.
async fn serve_connection(stream: TcpStream, client: BoundaryClient<Job, u64>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let mut parts = line.split_whitespace();
        let job = match (
            parts.next(),
            parts.next().map(str::parse),
            parts.next().map(str::parse),
        ) {
            (Some("hash"), Some(Ok(seed)), Some(Ok(rounds))) => Job { seed, rounds },
            _ => {
                write.write_all(b"err bad request\n").await?;
                continue;
            }
        };
        let answer = match client.call_with_timeout(job, CALL_TIMEOUT) {
            Ok(ticket) => match ticket.await {
                Ok(sum) => format!("ok {sum}\n"),
                Err(e) => format!("err {e}\n"),
            },
            Err(e) => format!("err {e}\n"),
        };
        write.write_all(answer.as_bytes()).await?;
    }
    Ok(())
}

/// What one load client saw.
#[derive(Default)]
struct ClientReport {
    latencies: Vec<Duration>,
    errors: usize,
    checked: usize,
}

/// A load client: sequential requests on one connection.
async fn load_client(addr: SocketAddr, id: usize) -> std::io::Result<ClientReport> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut report = ClientReport::default();
    for i in 0..REQUESTS_PER_CONNECTION {
        let job = Job {
            seed: ((id as u64) << 32) | i as u64,
            rounds: rounds(),
        };
        let start = Instant::now();
        write
            .write_all(format!("hash {} {}\n", job.seed, job.rounds).as_bytes())
            .await?;
        let line = lines.next_line().await?.unwrap_or_default();
        report.latencies.push(start.elapsed());
        match line.strip_prefix("ok ").map(str::parse::<u64>) {
            Some(Ok(sum)) => {
                if i % 10 == 0 {
                    assert_eq!(sum, job_checksum(job), "wrong answer for {job:?}");
                    report.checked += 1;
                }
            }
            _ => report.errors += 1,
        }
    }
    Ok(report)
}

/// The Tokio application: the line server plus its load.
async fn front_end(client: BoundaryClient<Job, u64>) -> Result<(ClientReport, Duration), Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(stream, client.clone()));
        }
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|id| tokio::spawn(load_client(addr, id)))
        .collect();
    let mut total = ClientReport::default();
    for c in clients {
        let r = c.await??;
        total.latencies.extend(r.latencies);
        total.errors += r.errors;
        total.checked += r.checked;
    }
    let elapsed = start.elapsed();
    accept.abort();
    Ok((total, elapsed))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn Error>> {
    let spargio = RuntimeBuilder::new().shards(2).build()?;
    let (client, server) = boundary::channel::<Job, u64>(BOUNDARY_CAPACITY);
    let dispatch = spargio
        .handle()
        .spawn_pinned(0, dispatcher(spargio.handle().clone(), server))?;

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?;
    let (mut report, elapsed) = tokio.block_on(front_end(client))?;
    // Shutting Tokio down drops the connection tasks and with them the last
    // boundary clients: the dispatcher then sees `Closed` and returns.
    drop(tokio);
    let dispatched = spargio.block_on(dispatch)??;

    report.latencies.sort();
    let requests = report.latencies.len();
    let stats = spargio.handle().stats_snapshot();
    println!(
        "mixed_mode_service: Tokio front end, spargio hot path ({:?} backend)",
        spargio.handle().backend()
    );
    println!(
        "  {requests} requests over {CONNECTIONS} connections in {:.2?} ({:.0} req/s), {} errors, {} answers checked",
        elapsed,
        requests as f64 / elapsed.as_secs_f64(),
        report.errors,
        report.checked
    );
    println!(
        "  latency p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        percentile(&report.latencies, 0.50),
        percentile(&report.latencies, 0.99),
        report.latencies.last().copied().unwrap_or_default()
    );
    println!(
        "  spargio: {dispatched} requests dispatched, {} tasks fanned out, {} stolen by idle shards",
        dispatched as u64 * BRANCHES,
        stats.total(|s| s.stolen)
    );
    for s in &stats.shards {
        println!(
            "    shard {}: {} polls, {} stolen, {} parks",
            s.shard, s.polled, s.stolen, s.parks
        );
    }
    if report.errors > 0 || dispatched != requests {
        return Err(format!(
            "{} errors, {dispatched} of {requests} requests dispatched",
            report.errors
        )
        .into());
    }
    Ok(())
}
