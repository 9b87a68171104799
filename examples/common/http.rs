//! Just enough HTTP/1.1 for the examples: read request heads from a
//! keep-alive connection (pipelining included) and write responses.

use std::io;

use spargio::net::TcpStream;

/// The longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One request head.
pub struct Request {
    pub method: String,
    /// The request target, query string included.
    pub target: String,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// A connection: the stream and the bytes read past the last request.
pub struct Conn {
    pub stream: TcpStream,
    buffered: Vec<u8>,
    scratch: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buffered: Vec::new(),
            scratch: Vec::with_capacity(8192),
        }
    }

    /// Reads more bytes into the buffer; false when the peer closed.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let (res, scratch) = self.stream.recv(scratch).await;
        self.buffered.extend_from_slice(&scratch);
        self.scratch = scratch;
        Ok(res? > 0)
    }

    /// The next request, `None` when the peer closed between requests.
    /// A request body (`Content-Length`) is read and discarded.
    pub async fn next_request(&mut self) -> io::Result<Option<Request>> {
        let end = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            if self.buffered.len() > MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too long",
                ));
            }
            if !self.fill().await? {
                return match self.buffered.is_empty() {
                    true => Ok(None),
                    false => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
        };
        let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
        self.buffered.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut parts = lines.next().unwrap_or("").split(' ');
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => (m, t, v),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line")),
        };
        let mut keep_alive = version == "HTTP/1.1";
        let mut body = 0usize;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("connection") {
                keep_alive = value.eq_ignore_ascii_case("keep-alive")
                    || (keep_alive && !value.eq_ignore_ascii_case("close"));
            } else if name.eq_ignore_ascii_case("content-length") {
                body = value
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            }
        }
        while self.buffered.len() < body {
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.buffered.drain(..body);
        Ok(Some(Request {
            method: method.to_owned(),
            target: target.to_owned(),
            keep_alive,
        }))
    }

    /// Writes a response head (`Content-Length: len`) and then `body`.
    pub async fn respond(
        &self,
        status: &str,
        content_type: &str,
        len: u64,
        keep_alive: bool,
        body: Vec<u8>,
    ) -> io::Result<()> {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: {connection}\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(&body);
        self.stream.write_all(out).await.0
    }
}

/// The `--addr IP:PORT` argument, or `default`.
pub fn addr_arg(default: &str) -> std::net::SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    let value = args
        .iter()
        .position(|a| a == "--addr")
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str);
    value.parse().expect("--addr takes IP:PORT")
}
