//! Just enough HTTP/1.1 for the examples: read request heads from a
//! keep-alive connection (pipelining included) and write responses.
//!
//! Memory per connection is bounded whatever the peer sends: the head is
//! limited to [`MAX_HEAD`] bytes (`431 Request Header Fields Too Large`
//! beyond), and a request body, which the examples never use, is read and
//! dropped in chunks of at most [`CHUNK`] bytes, never buffered whole. A
//! malformed request line or header gets `400 Bad Request`, a
//! `Transfer-Encoding` body `501 Not Implemented`; the connection then
//! closes. Lines may end in CRLF or in a bare LF.

use std::io;
use std::net::Shutdown;

use spargio::net::TcpStream;

/// The longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// The most read from the socket at once (and kept of a body: nothing).
pub const CHUNK: usize = 64 * 1024;

/// After an error response, at most this much more input is read and dropped
/// before closing, so the peer sees the response rather than a reset.
const LINGER: usize = 1 << 20;

/// One request head.
pub struct Request {
    pub method: String,
    /// The request target, query string included.
    pub target: String,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// Why a request is refused before it reaches the server's handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    BadRequest(&'static str),
    HeadTooLarge,
    NotImplemented(&'static str),
}

impl Refusal {
    pub fn status(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "400 Bad Request",
            Refusal::HeadTooLarge => "431 Request Header Fields Too Large",
            Refusal::NotImplemented(_) => "501 Not Implemented",
        }
    }
}

/// A parsed head: the request, its body length, and whether the client
/// waits for `100 Continue` before sending the body.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub keep_alive: bool,
    pub body: u64,
    pub expect_continue: bool,
}

/// Where the head in `buf` ends: `Some((head_len, consumed))` once an empty
/// line (CRLF or bare LF) follows it, `head_len` excluding the empty line.
/// Empty lines before the request line are skipped (RFC 9112, 2.2).
pub fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut start = 0;
    while let Some(at) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + at];
        if line.is_empty() || line == b"\r" {
            return Some((start, start + at + 1));
        }
        start += at + 1;
    }
    None
}

/// True for a `tchar` of RFC 9110 (method and header-name characters).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a head (its last line's ending included, the empty line after it not).
pub fn parse_head(head: &[u8]) -> Result<Head, Refusal> {
    let head = std::str::from_utf8(head).map_err(|_| Refusal::BadRequest("head is not UTF-8"))?;
    // The last line's own line ending.
    let head = head.strip_suffix('\n').unwrap_or(head);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if is_token(m) && !t.is_empty() => (m, t, v),
        _ => return Err(Refusal::BadRequest("malformed request line")),
    };
    if target.bytes().any(|b| b.is_ascii_control()) {
        return Err(Refusal::BadRequest("control character in the target"));
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(Refusal::BadRequest("unsupported HTTP version")),
    };
    let mut body: Option<u64> = None;
    let mut expect_continue = false;
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(Refusal::BadRequest("obsolete header line folding"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Refusal::BadRequest("header line without a colon"));
        };
        if !is_token(name) {
            return Err(Refusal::BadRequest("malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse::<u64>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(Refusal::BadRequest("bad Content-Length"))?;
            if body.is_some_and(|b| b != len) {
                return Err(Refusal::BadRequest("conflicting Content-Length"));
            }
            body = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal::NotImplemented("Transfer-Encoding"));
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        keep_alive,
        body: body.unwrap_or(0),
        expect_continue,
    })
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
            scratch: Vec::with_capacity(CHUNK),
        }
    }

    /// Receives up to [`CHUNK`] bytes into the scratch buffer; 0 when the
    /// peer closed.
    async fn recv(&mut self) -> io::Result<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let (res, scratch) = self.stream.recv(scratch).await;
        self.scratch = scratch;
        res
    }

    /// Reads more bytes into the buffer; false when the peer closed.
    async fn fill(&mut self) -> io::Result<bool> {
        let n = self.recv().await?;
        self.buffered.extend_from_slice(&self.scratch[..n]);
        Ok(n > 0)
    }

    /// Reads and drops `len` body bytes, at most [`CHUNK`] at a time.
    async fn discard(&mut self, mut len: u64) -> io::Result<()> {
        let from_buffer = len.min(self.buffered.len() as u64) as usize;
        self.buffered.drain(..from_buffer);
        len -= from_buffer as u64;
        while len > 0 {
            let n = self.recv().await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // Bytes past the body belong to the next (pipelined) request.
            let body = (n as u64).min(len) as usize;
            self.buffered.extend_from_slice(&self.scratch[body..n]);
            len -= body as u64;
        }
        Ok(())
    }

    /// The next request, `None` when the peer closed between requests or the
    /// request was refused (the refusal has been sent). A request body
    /// (`Content-Length`) is read and dropped in bounded chunks.
    pub async fn next_request(&mut self) -> io::Result<Option<Request>> {
        let (head_len, consumed) = loop {
            // Empty lines before a request line are skipped.
            let blank = self
                .buffered
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(self.buffered.len());
            self.buffered.drain(..blank);
            if let Some(end) = head_end(&self.buffered) {
                break end;
            }
            if self.buffered.len() > MAX_HEAD {
                return self.refuse(Refusal::HeadTooLarge).await;
            }
            if !self.fill().await? {
                return match self.buffered.is_empty() {
                    true => Ok(None),
                    false => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
        };
        if head_len > MAX_HEAD {
            return self.refuse(Refusal::HeadTooLarge).await;
        }
        let parsed = parse_head(&self.buffered[..head_len]);
        self.buffered.drain(..consumed);
        let head = match parsed {
            Ok(head) => head,
            Err(refusal) => return self.refuse(refusal).await,
        };
        if head.body > 0 {
            if head.expect_continue && self.buffered.is_empty() {
                self.stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                    .await
                    .0?;
            }
            self.discard(head.body).await?;
        }
        Ok(Some(Request {
            method: head.method,
            target: head.target,
            keep_alive: head.keep_alive,
        }))
    }

    /// Sends the refusal's status with `Connection: close`, stops sending,
    /// and drops what the peer still sends (bounded) so that closing does not
    /// reset the connection before the peer has read the response.
    async fn refuse(&mut self, refusal: Refusal) -> io::Result<Option<Request>> {
        self.respond(refusal.status(), "text/plain", 0, false, Vec::new())
            .await?;
        self.stream.shutdown(Shutdown::Write).await?;
        let mut drained = 0;
        while drained < LINGER {
            match self.recv().await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Ok(None)
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
