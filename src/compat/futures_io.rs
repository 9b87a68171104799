//! `futures_io::{AsyncRead, AsyncBufRead, AsyncWrite}` for [`Io`] (feature `futures-io`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncBufRead, AsyncRead, AsyncWrite};

use super::{Io, Sink, Source};

impl<T: Source + Unpin> AsyncRead for Io<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Io::poll_read(self.get_mut(), cx, buf)
    }
}

impl<T: Source + Unpin> AsyncBufRead for Io<T> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Io::poll_fill_buf(self.get_mut(), cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Io::consume(self.get_mut(), amt);
    }
}

impl<T: Sink + Unpin> AsyncWrite for Io<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Io::poll_write(self.get_mut(), cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Io::poll_write_vectored(self.get_mut(), cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Io::poll_flush(self.get_mut(), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Io::poll_shutdown(self.get_mut(), cx)
    }
}
