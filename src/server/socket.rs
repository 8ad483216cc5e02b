//! An accepted connection's socket that tells its connection's clocks when bytes arrive: the HTTP
//! port's head clock starts at a head's first byte, the gRPC port's preface clock stops at the
//! preface's last.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection does with the size of each read that brought bytes.
pub(super) trait Arrivals: Unpin {
    /// `bytes` (> 0) were just read.
    fn arrived(&mut self, bytes: usize);
}

/// A TCP socket that reports each read's bytes to `arrivals`; writes pass straight through.
pub(super) struct Noted<A> {
    pub tcp: tokio::net::TcpStream,
    pub arrivals: A,
}

impl<A: Arrivals> AsyncRead for Noted<A> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.arrivals.arrived(read);
        }
        polled
    }
}

impl<A: Arrivals> AsyncWrite for Noted<A> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
}
