//! A tour of spargio on this machine: the kernel features it found, a
//! MSG_RING ping-pong, a stealable fan-out, a timer, a file round trip, a TCP
//! echo on loopback and the runtime's statistics. Exits non-zero if any step
//! fails.
//!
//! ```text
//! cargo run --release --example tour
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use spargio::{Backend, Event, RuntimeBuilder, ShardCtx};

const PING: u16 = 1;
const PONG: u16 = 2;

fn main() -> ExitCode {
    match tour() {
        Ok(()) => {
            println!("\ntour: all steps passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ntour: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(name: &str) {
    println!("\n== {name}");
}

/// How each kind of work runs on the backend the runtime got.
struct Paths {
    messages: &'static str,
    files: &'static str,
    sockets: &'static str,
}

impl Paths {
    fn of(backend: Backend) -> Paths {
        match backend {
            Backend::IoUring => Paths {
                messages: "MSG_RING",
                files: "io_uring",
                sockets: "io_uring",
            },
            Backend::Queue => Paths {
                messages: "in-memory queues, Queue backend",
                files: "blocking pool, Queue backend",
                sockets: "epoll readiness, Queue backend",
            },
        }
    }
}

fn tour() -> Result<(), String> {
    step("kernel");
    match spargio::sys::probe::Features::detect() {
        Ok(f) => println!("{f}"),
        Err(e) => println!("io_uring unavailable here: {e}"),
    }

    step("runtime");
    let rt = RuntimeBuilder::new()
        .shards(2)
        .build()
        .map_err(|e| e.to_string())?;
    let handle = rt.handle().clone();
    match (handle.backend(), rt.fallback_reason()) {
        (Backend::IoUring, _) => println!("2 shards, one io_uring each"),
        (Backend::Queue, Some(why)) => println!("2 shards on the Queue backend, because: {why}"),
        (Backend::Queue, None) => println!("2 shards on the Queue backend"),
    }

    let paths = Paths::of(handle.backend());
    step(&format!(
        "ping-pong between shard 0 and shard 1 ({})",
        paths.messages
    ));
    let rounds = 10_000u32;
    let h = handle.clone();
    let (elapsed, last) = rt
        .block_on(async move {
            let responder = h.spawn_pinned(1, async move {
                let ctx = ShardCtx::current().expect("on a shard");
                loop {
                    let Event::RingMsg { from, tag, val } = ctx.next_event().await else {
                        continue;
                    };
                    if tag != PING {
                        return;
                    }
                    ctx.remote(from).unwrap().send_raw_nowait(PONG, val + 1).unwrap();
                    if val + 1 == rounds {
                        return;
                    }
                }
            })?;
            let ctx = ShardCtx::current().expect("on a shard");
            let to_responder = ctx.remote(1)?;
            let start = Instant::now();
            let mut last = 0;
            for i in 0..rounds {
                to_responder
                    .send_raw_nowait(PING, i)
                    .map_err(|e| spargio::RuntimeError::InvalidConfig(e.to_string()))?;
                let Event::RingMsg { val, .. } = ctx.next_event().await else {
                    unreachable!()
                };
                last = val;
            }
            let elapsed = start.elapsed();
            responder
                .await
                .map_err(|e| spargio::RuntimeError::InvalidConfig(e.to_string()))?;
            Ok::<_, spargio::RuntimeError>((elapsed, last))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if last != rounds {
        return Err(format!("ping-pong ended at {last}, expected {rounds}"));
    }
    println!(
        "{rounds} round trips, {:.2} µs each",
        elapsed.as_secs_f64() * 1e6 / f64::from(rounds)
    );

    step("stealable fan-out");
    let h = handle.clone();
    let before = handle.stats_snapshot();
    let (sum, shards_used) = rt
        .block_on(async move {
            let tasks: Vec<_> = (0..64u64)
                .map(|i| {
                    h.spawn_stealable(async move {
                        let mut x = i;
                        for k in 0..200_000u64 {
                            x = x
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407 ^ k);
                            x ^= x >> 29;
                        }
                        (x & 0xff, ShardCtx::current().map(|c| c.shard_id()))
                    })
                    .expect("spawn")
                })
                .collect();
            let mut sum = 0;
            let mut used = [false; 2];
            for t in tasks {
                let (v, shard) = t.await.expect("task");
                sum += v;
                if let Some(s) = shard {
                    used[s] = true;
                }
            }
            (sum, used)
        })
        .map_err(|e| e.to_string())?;
    let after = handle.stats_snapshot();
    let stolen = after.total(|s| s.stolen) - before.total(|s| s.stolen);
    println!("64 tasks, checksum {sum}, ran on shards {shards_used:?}, {stolen} stolen by the idle shard");

    step("timer");
    let slept = rt
        .block_on(async {
            let start = Instant::now();
            spargio::time::sleep(Duration::from_millis(20)).await;
            start.elapsed()
        })
        .map_err(|e| e.to_string())?;
    if slept < Duration::from_millis(20) {
        return Err(format!("sleep(20 ms) returned after {slept:?}"));
    }
    println!("sleep(20 ms) took {:.2} ms", slept.as_secs_f64() * 1e3);

    step(&format!("file written, read back and verified ({})", paths.files));
    let path = std::env::temp_dir().join(format!("spargio-tour-{}", std::process::id()));
    let p = path.clone();
    let verified = rt
        .block_on(async move {
            let data: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
            spargio::fs::write(&p, data.clone()).await?;
            let file = spargio::fs::File::open(&p).await?;
            file.sync_all().await?;
            let back = file.read_to_end_at(0).await?;
            spargio::fs::remove_file(&p).await?;
            Ok::<_, std::io::Error>(back == data)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !verified {
        return Err("file contents differ".into());
    }
    println!("1 MiB written, fsynced, read back: identical");

    step(&format!("TCP echo on loopback ({})", paths.sockets));
    let h = handle.clone();
    let (echoed, elapsed) = rt
        .block_on(async move {
            use spargio::net::{TcpListener, TcpStream};
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
            let addr = listener.local_addr()?;
            // The server runs on shard 1, the client here on shard 0.
            let server = h
                .spawn_pinned(1, async move {
                    let (conn, _) = listener.accept().await?;
                    conn.set_nodelay(true)?;
                    let mut buf = Vec::with_capacity(4096);
                    loop {
                        buf.clear();
                        let (res, b) = conn.recv(buf).await;
                        if res? == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        let (res, b) = conn.write_all(b).await;
                        res?;
                        buf = b;
                    }
                })
                .map_err(std::io::Error::other)?;
            let client = TcpStream::connect(addr).await?;
            client.set_nodelay(true)?;
            let start = Instant::now();
            let mut echoed = 0;
            for i in 0..1000u32 {
                let msg = vec![(i % 251) as u8; 256];
                let (res, _) = client.write_all(msg).await;
                res?;
                let (res, back) = client.read_exact(vec![0u8; 256]).await;
                res?;
                if back.iter().any(|&b| b != (i % 251) as u8) {
                    return Err(std::io::Error::other(format!("echo {i} differs")));
                }
                echoed += 256;
            }
            let elapsed = start.elapsed();
            client.shutdown(std::net::Shutdown::Write).await?;
            server.await.map_err(|e| std::io::Error::other(e.to_string()))??;
            Ok::<_, std::io::Error>((echoed, elapsed))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("echo: {e}"))?;
    println!(
        "1000 round trips of 256 B ({echoed} bytes checked), {:.1} µs each",
        elapsed.as_secs_f64() * 1e6 / 1000.0
    );

    step("stats");
    let stats = handle.stats_snapshot();
    for s in &stats.shards {
        println!(
            "shard {}: spawned {}, polled {}, stolen {}, msgs sent/received {}/{}, doorbells sent/skipped {}/{}, parks {}",
            s.shard,
            s.spawned,
            s.polled,
            s.stolen,
            s.msgs_sent,
            s.msgs_received,
            s.doorbells_sent,
            s.doorbells_skipped,
            s.parks
        );
    }
    drop(rt);
    Ok(())
}
