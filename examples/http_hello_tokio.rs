//! `examples/http_hello.rs` on Tokio, for comparison: the same HTTP/1.1
//! responder (the same head parser, `examples/common/http.rs`) on Tokio's
//! multi-threaded runtime and its epoll-based `TcpStream`.
//! `scripts/bench-http.sh` measures the two side by side.
//!
//! ```text
//! cargo run --release --example http_hello_tokio -- --addr 127.0.0.1:8080
//! ```
#![forbid(unsafe_code)]

#[path = "common/http.rs"]
#[allow(dead_code)]
mod http;

use std::io::{self, Write};

use http::{CHUNK, MAX_HEAD, head_end, parse_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = b"Hello, world!\n";

/// Serves one connection: requests as `http_hello` answers them.
async fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffered: Vec<u8> = Vec::new();
    let mut scratch = vec![0u8; CHUNK];
    loop {
        let blank = buffered
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(buffered.len());
        buffered.drain(..blank);
        let Some((head_len, consumed)) = head_end(&buffered) else {
            if buffered.len() > MAX_HEAD {
                return refuse(&mut stream, "431 Request Header Fields Too Large").await;
            }
            let n = stream.read(&mut scratch).await?;
            if n == 0 {
                return Ok(());
            }
            buffered.extend_from_slice(&scratch[..n]);
            continue;
        };
        if head_len > MAX_HEAD {
            return refuse(&mut stream, "431 Request Header Fields Too Large").await;
        }
        let head = match parse_head(&buffered[..head_len]) {
            Ok(head) => head,
            Err(refusal) => return refuse(&mut stream, refusal.status()).await,
        };
        buffered.drain(..consumed);
        // A body is read and dropped.
        let mut left = head.body;
        let from_buffer = left.min(buffered.len() as u64) as usize;
        buffered.drain(..from_buffer);
        left -= from_buffer as u64;
        if left > 0 && head.expect_continue {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while left > 0 {
            let n = stream.read(&mut scratch).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let body = (n as u64).min(left) as usize;
            buffered.extend_from_slice(&scratch[body..n]);
            left -= body as u64;
        }
        let path = head.target.split('?').next().unwrap_or("");
        let (status, len, body): (&str, usize, &[u8]) = match (head.method.as_str(), path) {
            ("GET", "/") => ("200 OK", BODY.len(), BODY),
            ("HEAD", "/") => ("200 OK", BODY.len(), b""),
            ("GET" | "HEAD", _) => ("404 Not Found", 0, b""),
            _ => ("405 Method Not Allowed", 0, b""),
        };
        let connection = if head.keep_alive { "keep-alive" } else { "close" };
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\nConnection: {connection}\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(body);
        stream.write_all(&out).await?;
        if !head.keep_alive {
            return stream.shutdown().await;
        }
    }
}

async fn refuse(stream: &mut TcpStream, status: &str) -> io::Result<()> {
    let out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn main() {
    let addr = http::addr_arg("127.0.0.1:8080");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let result: io::Result<()> = rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening on http://{} (Tokio)", listener.local_addr()?);
        io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = serve(stream).await;
            });
        }
    });
    if let Err(e) = result {
        eprintln!("http_hello_tokio: {e}");
        std::process::exit(1);
    }
}
