//! `examples/hyper_hello.rs` on Tokio, for comparison: the same hyper 1.x
//! service and I/O bridge on Tokio's multi-threaded runtime, its
//! `TcpStream` (in a `BufReader`, so reads cost the same one copy as
//! spargio's `compat::Io`) and its timer. `scripts/bench-http.sh` measures
//! the two side by side.
//!
//! ```text
//! cargo run --release --example hyper_hello_tokio -- --addr 127.0.0.1:8080
//! ```
#![forbid(unsafe_code)]

#[path = "common/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "common/hyper_glue.rs"]
mod hyper_glue;

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_glue::{HyperIo, hello};
use tokio::io::BufReader;
use tokio::net::TcpListener;

/// hyper's `rt::Timer` on Tokio's timer.
#[derive(Clone, Copy)]
struct TokioTimer;

struct TokioSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for TokioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.as_mut().poll(cx)
    }
}

impl Sleep for TokioSleep {}

impl Timer for TokioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(TokioSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(TokioSleep(Box::pin(tokio::time::sleep_until(deadline.into()))))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<TokioSleep>() {
            Some(mut ours) => ours.as_mut().get_mut().0.as_mut().reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

fn main() {
    let addr = http::addr_arg("127.0.0.1:8080");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let result: io::Result<()> = rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening on http://{} (hyper on Tokio)", listener.local_addr()?);
        io::stdout().flush()?;
        let mut server = http1::Builder::new();
        server.timer(TokioTimer).keep_alive(true);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let io = HyperIo(BufReader::with_capacity(spargio::compat::DEFAULT_BUF_LEN, stream));
            let conn = server.serve_connection(io, service_fn(hello));
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    if let Err(e) = result {
        eprintln!("hyper_hello_tokio: {e}");
        std::process::exit(1);
    }
}
