//! Client connections whose writes are gathered into fewer, larger socket
//! writes.
//!
//! h2 writes every DATA frame of 256 bytes or more to the socket on its own
//! (a `writev` plus a flush each). With many streams on one connection, as
//! when a hundred watchers share a client's connection, that is one system
//! call per stream per round of events: the watch benchmark spent about a
//! quarter of the server's CPU in `writev`, with 10 times as many writes as
//! etcd, whose gRPC server gathers the frames of all streams into one write.
//!
//! [`Coalesced`] keeps the bytes the server writes in a buffer, and a flush
//! asked for right after new writes is put off once: the connection's task
//! is woken at once and the flush is asked for again on its next poll,
//! after the tasks already waiting to run (the other streams) have queued
//! their frames. A flush asked for with no write since the last one, a
//! full buffer, or [`MAX_DEFERRALS`] flushes put off in a row write it out.
//! Nothing stays buffered without the task being due to run again, so no
//! byte waits for more traffic to come.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Buffered bytes from which a flush is never put off, and above which a
/// write first tries to send what is buffered.
pub const FLUSH_AT: usize = 64 * 1024;
/// Flushes put off in a row at most, so a steady trickle of small writes
/// still reaches the client within a few polls.
pub const MAX_DEFERRALS: u32 = 4;

/// A connection whose writes are gathered; reads pass through.
pub struct Coalesced<IO> {
    io: IO,
    buf: Vec<u8>,
    /// Bytes of `buf` before this are written already.
    sent: usize,
    /// Bytes were buffered since the last flush was asked for.
    wrote: bool,
    /// Flushes put off since the last real one.
    deferrals: u32,
}

impl<IO> Coalesced<IO> {
    pub fn new(io: IO) -> Self {
        Coalesced {
            io,
            buf: Vec::new(),
            sent: 0,
            wrote: false,
            deferrals: 0,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.sent
    }
}

impl<IO: AsyncWrite + Unpin> Coalesced<IO> {
    /// Writes out everything buffered (not flushing `io`).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.buf.capacity() > 4 * FLUSH_AT {
            // One burst of large writes keeps no large buffer.
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Room for `len` more bytes: when the buffer is full, sends it first.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.buffered() > 0 && self.buffered() + len > FLUSH_AT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx, data.len()))?;
        if this.buffered() == 0 && data.len() >= FLUSH_AT {
            // Too large to be worth copying.
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        this.wrote = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        ready!(this.poll_room(cx, len))?;
        if this.buffered() == 0 && len >= FLUSH_AT {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        this.wrote = true;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered() > 0
            && this.wrote
            && this.deferrals < MAX_DEFERRALS
            && this.buffered() < FLUSH_AT
        {
            // Put off: the task runs again after the others waiting, and
            // asks again.
            this.wrote = false;
            this.deferrals += 1;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        this.wrote = false;
        this.deferrals = 0;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Coalesced<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests;
