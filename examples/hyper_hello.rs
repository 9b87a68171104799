//! hyper 1.x serving `Hello, world!` on spargio: connections are accepted on
//! io_uring and handed to the shards in turn; each is served by a task pinned
//! there, with hyper's HTTP/1.1 (keep-alive) on a [`spargio::compat::Io`]
//! (feature `tokio-io`). hyper's executor and timer are spargio's: no Tokio
//! runtime runs.
//!
//! ```text
//! cargo run --release --features tokio-io --example hyper_hello -- --addr 127.0.0.1:8080
//! curl http://127.0.0.1:8080/
//! ```
//!
//! The glue a hyper server needs is all here: [`ShardExecutor`] (hyper's
//! `rt::Executor`), [`SpargioTimer`] (`rt::Timer`, `rt::Sleep` on
//! `spargio::time`), and `HyperIo` (examples/common/hyper_glue.rs), which
//! turns any Tokio `AsyncBufRead + AsyncWrite` into hyper's I/O traits.
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

use hyper::rt::{Executor, Sleep, Timer};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_glue::{HyperIo, hello};
use spargio::RuntimeHandle;
use spargio::compat::Io;
use spargio::net::TcpListener;

/// hyper's `rt::Executor` on spargio: spawns onto one shard (pinned), so a
/// connection's task runs where its socket's ops are steered.
#[derive(Clone)]
struct ShardExecutor {
    handle: RuntimeHandle,
    shard: usize,
}

impl<F> Executor<F> for ShardExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        // Fails only once the runtime shuts down: then nothing is served anyway.
        let _ = self.handle.spawn_pinned(self.shard, async move {
            fut.await;
        });
    }
}

/// hyper's `rt::Timer` on spargio's timing wheels.
#[derive(Clone, Copy)]
struct SpargioTimer;

/// A [`spargio::time::Sleep`] as hyper's `rt::Sleep`.
struct SpargioSleep(spargio::time::Sleep);

impl Future for SpargioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl Sleep for SpargioSleep {}

impl Timer for SpargioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(SpargioSleep(spargio::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(SpargioSleep(spargio::time::sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        // Reuse the armed timer where it is ours (no new allocation).
        match sleep.as_mut().downcast_mut_pin::<SpargioSleep>() {
            Some(mut ours) => ours.as_mut().get_mut().0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

async fn accept_loop(listener: TcpListener, handle: RuntimeHandle) -> io::Result<()> {
    let mut server = http1::Builder::new();
    server.timer(SpargioTimer).keep_alive(true);
    loop {
        let (stream, _peer, shard) = listener.accept_round_robin().await?;
        let _ = stream.set_nodelay(true);
        let conn = server.serve_connection(HyperIo(Io::new(stream)), service_fn(hello));
        ShardExecutor {
            handle: handle.clone(),
            shard,
        }
        .execute(async move {
            // A connection error (a reset, a malformed request) ends that connection only.
            let _ = conn.await;
        });
    }
}

fn main() {
    let addr = http::addr_arg("127.0.0.1:8080");
    let result = spargio::run(move |handle| async move {
        let listener = TcpListener::bind(addr)?;
        println!(
            "listening on http://{} with {} shards (hyper)",
            listener.local_addr()?,
            handle.shard_count()
        );
        io::stdout().flush()?;
        accept_loop(listener, handle).await
    });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("hyper_hello: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("hyper_hello: runtime: {e}");
            std::process::exit(1);
        }
    }
}
