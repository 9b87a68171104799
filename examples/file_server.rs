//! Serves the files of a directory over HTTP/1.1 (keep-alive), reading them
//! with native io_uring file ops: open, statx and reads of 64 KiB straight
//! into the buffer that is then sent.
//!
//! ```text
//! cargo run --release --example file_server -- --dir ./docs --addr 127.0.0.1:8081
//! curl http://127.0.0.1:8081/ARCHITECTURE.md
//! ```
//!
//! A directory serves its `index.html`. Files are opened with
//! [`spargio::fs::Dir`], beneath the served directory: a path with `..`, or
//! a symlink whose target lies outside the directory (`ln -s /etc docs/etc`),
//! is refused (403) by the kernel's `openat2(RESOLVE_BENEATH)`, not only by
//! the text check. Missing files are 404, methods other than `GET` and
//! `HEAD` are 405.
#![forbid(unsafe_code)]

#[path = "common/http.rs"]
mod http;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use http::{Conn, Request};
use spargio::RuntimeHandle;
use spargio::fs::{Dir, File};
use spargio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;

/// Maps a request target to a path relative to the served directory (`.`
/// for the directory itself); `None` for a target with `..` or a bad escape.
fn resolve(target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let mut out = PathBuf::from(".");
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => out.push(p),
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a NUL.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt" | "md" | "rs" | "toml") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Opens the file a relative path names (a directory's `index.html`),
/// beneath `root`.
async fn open(root: &Dir, path: &Path) -> io::Result<(File, u64, PathBuf)> {
    let mut path = path.to_path_buf();
    let mut file = root.open_file(&path).await?;
    let mut meta = file.metadata().await?;
    if meta.is_dir() {
        path.push("index.html");
        file = root.open_file(&path).await?;
        meta = file.metadata().await?;
    }
    if !meta.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    Ok((file, meta.len(), path))
}

/// True for the errors of a path that would leave the served directory.
fn escapes(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied || matches!(e.raw_os_error(), Some(libc::EXDEV | libc::ELOOP))
}

async fn answer(conn: &Conn, root: &Dir, req: &Request) -> io::Result<()> {
    let ka = req.keep_alive;
    let head_only = match req.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return conn
                .respond("405 Method Not Allowed", "text/plain", 0, ka, Vec::new())
                .await;
        }
    };
    let Some(path) = resolve(&req.target) else {
        return conn
            .respond("403 Forbidden", "text/plain", 0, ka, Vec::new())
            .await;
    };
    let (file, len, path) = match open(root, &path).await {
        Ok(found) => found,
        Err(e) => {
            let status = if escapes(&e) {
                "403 Forbidden"
            } else {
                "404 Not Found"
            };
            return conn.respond(status, "text/plain", 0, ka, Vec::new()).await;
        }
    };
    // The head, then the file in chunks, each read into the buffer that is sent.
    conn.respond("200 OK", content_type(&path), len, ka, Vec::new())
        .await?;
    if head_only {
        return Ok(());
    }
    let mut pos = 0;
    let mut buf = Vec::with_capacity(CHUNK);
    while pos < len {
        buf.clear();
        let (res, b) = file.read_at(buf, pos).await;
        let n = res?;
        if n == 0 {
            // The file shrank: the promised length cannot be sent.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        pos += n as u64;
        let (res, b) = conn.stream.write_all(b).await;
        res?;
        buf = b;
    }
    file.close().await
}

async fn serve(stream: TcpStream, root: Dir) -> io::Result<()> {
    let mut conn = Conn::new(stream);
    while let Some(req) = conn.next_request().await? {
        answer(&conn, &root, &req).await?;
        if !req.keep_alive {
            break;
        }
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, handle: RuntimeHandle, root: Dir) -> io::Result<()> {
    loop {
        let (stream, _peer, shard) = listener.accept_round_robin().await?;
        let root = root.clone();
        handle
            .spawn_pinned(shard, async move {
                let _ = serve(stream, root).await;
            })
            .map_err(io::Error::other)?;
    }
}

fn main() {
    let addr = http::addr_arg("127.0.0.1:8081");
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map_or(".", String::as_str);
    let root_path = match std::fs::canonicalize(dir) {
        Ok(root) => root,
        Err(e) => {
            eprintln!("file_server: --dir {dir}: {e}");
            std::process::exit(2);
        }
    };
    let result = spargio::run(move |handle| async move {
        let root = Dir::open(&root_path).await?;
        let listener = TcpListener::bind(addr)?;
        println!(
            "listening on http://{}, serving {}",
            listener.local_addr()?,
            root_path.display()
        );
        io::stdout().flush()?;
        accept_loop(listener, handle, root).await
    });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("file_server: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("file_server: runtime: {e}");
            std::process::exit(1);
        }
    }
}
