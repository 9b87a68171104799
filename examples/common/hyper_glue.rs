//! What the hyper examples share: a bridge from Tokio-style buffered I/O
//! (`tokio::io::{AsyncBufRead, AsyncWrite}`) to hyper 1.x's own I/O traits,
//! and the "Hello, world!" service.
//!
//! The bridge reads through `poll_fill_buf` + `consume`, so it copies each
//! byte once from the reader's buffer into hyper's: spargio's `compat::Io` is
//! a buffered reader already, and the Tokio example wraps its socket in a
//! `BufReader`, which costs the same one copy.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncBufRead, AsyncWrite};

/// The body of `GET /`, as `examples/http_hello.rs` sends it.
pub const BODY: &[u8] = b"Hello, world!\n";

/// Any Tokio `AsyncBufRead + AsyncWrite` as hyper's `Read + Write`.
pub struct HyperIo<T>(pub T);

impl<T: AsyncBufRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &mut self.get_mut().0;
        let avail = ready!(Pin::new(&mut *inner).poll_fill_buf(cx))?;
        let n = avail.len().min(buf.remaining());
        buf.put_slice(&avail[..n]);
        Pin::new(inner).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// `GET /` (or `HEAD /`): `Hello, world!`; another path: 404; another method: 405.
pub async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => (StatusCode::OK, Bytes::from_static(BODY)),
        (&Method::GET | &Method::HEAD, _) => (StatusCode::NOT_FOUND, Bytes::new()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}
