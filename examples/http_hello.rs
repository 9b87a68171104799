//! A minimal HTTP/1.1 responder: `GET /` (or `HEAD /`) gets `Hello, world!`,
//! any other path a 404, on keep-alive connections (pipelined requests
//! included). Connections are
//! handed to the shards in turn and served by a task pinned there.
//!
//! ```text
//! cargo run --release --example http_hello -- --addr 127.0.0.1:8080
//! cargo run --release --example http_hello -- --backend queue   # the fallback backend
//! curl http://127.0.0.1:8080/
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```
#![forbid(unsafe_code)]

#[path = "common/http.rs"]
mod http;

use std::io::{self, Write};

use http::Conn;
use spargio::net::{TcpListener, TcpStream};
use spargio::{Backend, RuntimeBuilder, RuntimeHandle};

const BODY: &[u8] = b"Hello, world!\n";

async fn serve(conn: TcpStream) -> io::Result<()> {
    let mut conn = Conn::new(conn);
    while let Some(req) = conn.next_request().await? {
        let path = req.target.split('?').next().unwrap_or("");
        let (status, len, body) = match (req.method.as_str(), path) {
            ("GET", "/") => ("200 OK", BODY.len(), BODY.to_vec()),
            ("HEAD", "/") => ("200 OK", BODY.len(), Vec::new()),
            ("GET" | "HEAD", _) => ("404 Not Found", 0, Vec::new()),
            _ => ("405 Method Not Allowed", 0, Vec::new()),
        };
        conn.respond(status, "text/plain", len as u64, req.keep_alive, body)
            .await?;
        if !req.keep_alive {
            break;
        }
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, handle: RuntimeHandle) -> io::Result<()> {
    loop {
        let (stream, _peer, shard) = listener.accept_round_robin().await?;
        handle
            .spawn_pinned(shard, async move {
                let _ = serve(stream).await;
            })
            .map_err(io::Error::other)?;
    }
}

/// The `--backend io_uring|queue` argument (default: io_uring, falling back
/// to the Queue backend where io_uring is refused).
fn backend_arg() -> Option<Backend> {
    let args: Vec<String> = std::env::args().collect();
    let value = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))?;
    match value.as_str() {
        "io_uring" | "iouring" => Some(Backend::IoUring),
        "queue" => Some(Backend::Queue),
        other => panic!("--backend takes io_uring or queue, not {other:?}"),
    }
}

fn main() {
    let addr = http::addr_arg("127.0.0.1:8080");
    let mut builder = RuntimeBuilder::new();
    if let Some(backend) = backend_arg() {
        builder = builder.backend(backend).fallback_to_queue(false);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("http_hello: runtime: {e}");
            std::process::exit(1);
        }
    };
    let handle = rt.handle().clone();
    let result = rt.block_on(async move {
        let listener = TcpListener::bind(addr)?;
        println!(
            "listening on http://{} with {} shards ({:?} backend)",
            listener.local_addr()?,
            handle.shard_count(),
            handle.backend()
        );
        io::stdout().flush()?;
        accept_loop(listener, handle).await
    });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("http_hello: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("http_hello: runtime: {e}");
            std::process::exit(1);
        }
    }
}
