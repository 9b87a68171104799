//! A minimal HTTP/1.1 responder: `GET /` (or `HEAD /`) gets `Hello, world!`,
//! any other path a 404, on keep-alive connections (pipelined requests
//! included). Connections are
//! handed to the shards in turn and served by a task pinned there.
//!
//! ```text
//! cargo run --release --example http_hello -- --addr 127.0.0.1:8080
//! curl http://127.0.0.1:8080/
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```
#![forbid(unsafe_code)]

#[path = "common/http.rs"]
mod http;

use std::io::{self, Write};

use http::Conn;
use spargio::RuntimeHandle;
use spargio::net::{TcpListener, TcpStream};

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

fn main() {
    let addr = http::addr_arg("127.0.0.1:8080");
    let result = spargio::run(move |handle| async move {
        let listener = TcpListener::bind(addr)?;
        println!(
            "listening on http://{} with {} shards",
            listener.local_addr()?,
            handle.shard_count()
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
