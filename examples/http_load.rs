//! A small HTTP/1.1 keep-alive load generator: N connections, each on its
//! own thread with a blocking socket, each sending `GET` and waiting for the
//! response before the next (no pipelining), for a fixed duration. Prints
//! requests per second and the latency percentiles of one request.
//!
//! ```text
//! cargo run --release --example http_load -- --addr 127.0.0.1:8080 --connections 32 --duration 10
//! ```
//!
//! Output, one `key=value` line (for `scripts/bench-http.sh`):
//! `requests=… errors=… seconds=… rps=… p50_us=… p99_us=… max_us=…`.
//! A response must be a `200` with a `Content-Length` body; anything else
//! counts as an error and ends that connection.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    path: String,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    Args {
        addr: get("--addr")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
            .expect("--addr takes IP:PORT"),
        connections: get("--connections")
            .map_or(32, |v| v.parse().expect("--connections takes a count"))
            .max(1),
        duration: Duration::from_secs_f64(
            get("--duration").map_or(10.0, |v| v.parse().expect("--duration takes seconds")),
        ),
        path: get("--path").unwrap_or_else(|| "/".into()),
    }
}

/// One keep-alive connection's reader: bytes received past the last response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0u8; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// Reads more bytes; false on end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }

    /// Reads one response; its status code.
    fn response(&mut self) -> io::Result<u16> {
        let (head_len, status, body) = loop {
            let data = &self.buf[self.start..self.end];
            if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&data[..at])
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "head is not UTF-8"))?;
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status"))?;
                let body = head
                    .split("\r\n")
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
                break (at + 4, status, body);
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        self.start += head_len;
        while self.end - self.start < body {
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.start += body;
        Ok(status)
    }
}

/// One connection's run: request latencies in microseconds, and errors.
fn run_connection(addr: SocketAddr, request: Arc<Vec<u8>>, stop: Arc<AtomicBool>) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(1 << 16);
    let stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(_) => return (latencies, 1),
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut conn = Conn::new(stream);
    // Relaxed: a stop flag; no data travels with it.
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        if conn.stream.write_all(&request).is_err() {
            return (latencies, 1);
        }
        match conn.response() {
            Ok(200) => latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32),
            _ => return (latencies, 1),
        }
    }
    (latencies, 0)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let args = args();
    let request = Arc::new(format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", args.path, args.addr).into_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.connections)
        .map(|_| {
            let (request, stop) = (request.clone(), stop.clone());
            std::thread::spawn(move || run_connection(args.addr, request, stop))
        })
        .collect();
    std::thread::sleep(args.duration);
    // Relaxed: see `run_connection`.
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (latencies, errs) = t.join().expect("a load thread panicked");
        all.extend(latencies);
        errors += errs;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let requests = all.len();
    println!(
        "requests={requests} errors={errors} seconds={seconds:.2} rps={:.0} p50_us={} p99_us={} max_us={}",
        requests as f64 / seconds,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0)
    );
    io::stdout().flush().ok();
    if requests == 0 || errors > 0 {
        std::process::exit(1);
    }
}
