//! A TCP echo server on spargio: the accept loop hands each connection to the
//! shards in turn, and every connection is served by a task pinned there.
//!
//! ```text
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7000
//! cargo run --release --example echo_server -- --self-test 100
//! ```
//!
//! `--self-test N` serves on a free loopback port, runs `N` concurrent clients
//! against it that check every echoed byte, prints a summary and exits
//! (status 1 on any mismatch or error).
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use spargio::io::IoBuf;
use spargio::net::{TcpListener, TcpStream};
use spargio::{RuntimeHandle, TaskPlacement};

/// Accepts connections forever, serving each on the next shard in turn.
async fn serve(listener: TcpListener, handle: RuntimeHandle) -> io::Result<()> {
    loop {
        let (stream, _peer, shard) = listener.accept_round_robin().await?;
        handle
            .spawn_pinned(shard, echo(stream))
            .map_err(io::Error::other)?;
    }
}

/// Echoes everything back until the peer closes.
async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (res, b) = stream.recv(buf).await;
        let n = match res {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (res, b) = stream.write_all(b.slice(..n)).await;
        buf = b.into_inner();
        buf.clear();
        if res.is_err() {
            return;
        }
    }
}

/// One self-test client: `rounds` messages of varying sizes, each checked.
async fn client(addr: SocketAddr, id: u64, rounds: u64) -> io::Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut bytes = 0;
    for round in 0..rounds {
        let len = 1 + ((id * 7919 + round * 104_729) % 8192) as usize;
        let msg: Vec<u8> = (0..len).map(|i| (i as u64 ^ id ^ round) as u8).collect();
        let (res, msg) = stream.write_all(msg).await;
        res?;
        let (res, back) = stream.read_exact(vec![0u8; len]).await;
        res?;
        if back != msg {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("client {id}: round {round} differs"),
            ));
        }
        bytes += len as u64;
    }
    Ok(bytes)
}

async fn self_test(listener: TcpListener, handle: RuntimeHandle, clients: u64) -> io::Result<()> {
    let addr = listener.local_addr()?;
    handle
        .spawn_pinned(0, serve(listener, handle.clone()))
        .map_err(io::Error::other)?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|id| handle.spawn_with_placement(TaskPlacement::RoundRobin, client(addr, id, 32)))
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| io::Error::other(e.to_string()))??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "self-test ok: {clients} clients, {total} bytes echoed and checked in {secs:.3} s ({:.1} MB/s)",
        2.0 * total as f64 / secs / 1e6
    );
    Ok(())
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let mut self_test_clients = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(v)) => addr = v.parse().expect("--addr takes IP:PORT"),
            ("--self-test", Some(v)) => {
                self_test_clients = Some(v.parse().expect("--self-test takes a count"))
            }
            _ => {
                eprintln!("usage: echo_server [--addr IP:PORT] [--self-test N]");
                std::process::exit(2);
            }
        }
    }
    if self_test_clients.is_some() && !std::env::args().any(|a| a == "--addr") {
        addr = "127.0.0.1:0".parse().unwrap(); // a free port
    }
    let result = spargio::run(move |handle| async move {
        let listener = TcpListener::bind(addr)?;
        match self_test_clients {
            Some(n) => self_test(listener, handle, n).await,
            None => {
                println!(
                    "echoing on {} with {} shards",
                    listener.local_addr()?,
                    handle.shard_count()
                );
                serve(listener, handle).await
            }
        }
    });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("echo_server: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("echo_server: runtime: {e}");
            std::process::exit(1);
        }
    }
}
