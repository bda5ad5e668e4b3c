//! Client connections whose HTTP/2 `:authority` h2 accepts.
//!
//! etcd 3.4's etcdctl dials `endpoint status` and `endpoint hashkv` through
//! gRPC-Go's passthrough resolver, which sends the endpoint as given, often
//! a URL (`http://127.0.0.1:2379`), as the `:authority` of every request.
//! Go's HTTP/2 server (etcd) takes it; h2 resets the stream as malformed
//! and offers no way to relax that. [`Connection`] sits between the socket
//! and the server and, when the first request of a connection carries such
//! an authority, re-encodes the header blocks of that connection with the
//! authority cut to `host:port`. Everything else, and every connection
//! whose first request is acceptable, passes untouched.

#[cfg(test)]
mod fixtures;
mod frames;
mod header_block;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use frames::Inbound;

/// An accepted client connection, as the gRPC server should read it.
/// Writes go to the client as they are.
pub struct Connection<IO> {
    io: IO,
    /// Until the connection is known to need nothing (the usual case, after
    /// its first request), the state of the repair; then reads go straight
    /// to `io`.
    inbound: Option<Box<Inbound>>,
    /// Repaired bytes the server has not read yet, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
    /// The client's bytes of the last read.
    input: Vec<u8>,
}

impl<IO> Connection<IO> {
    /// Wraps a connection just accepted: the repair must see the client's
    /// bytes from the first one.
    pub fn new(io: IO) -> Connection<IO> {
        Connection {
            io,
            inbound: Some(Box::new(Inbound::new())),
            ready: Vec::new(),
            ready_from: 0,
            input: Vec::new(),
        }
    }

    /// The client's connection itself.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Moves repaired bytes into `buf`; false when there were none.
    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let ready = &self.ready[self.ready_from..];
        if ready.is_empty() {
            return false;
        }
        let n = ready.len().min(buf.remaining());
        buf.put_slice(&ready[..n]);
        self.ready_from += n;
        if self.ready_from == self.ready.len() {
            self.ready_from = 0;
            if self.inbound.is_some() {
                self.ready.clear();
            } else {
                // Repair is over: an idle connection keeps no buffer.
                self.ready = Vec::new();
            }
        }
        true
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Connection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.hand_over(buf) {
                return Poll::Ready(Ok(()));
            }
            let Some(inbound) = this.inbound.as_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            // The caller's buffer takes the client's bytes, which then go
            // through the repair and come back from `ready`.
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            this.input.clear();
            this.input.extend_from_slice(&buf.filled()[before..]);
            buf.set_filled(before);
            if this.input.is_empty() {
                // The client closed its side: what was held back, then EOF.
                inbound.finish(&mut this.ready);
                this.inbound = None;
                this.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            inbound
                .feed(&this.input, &mut this.ready)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if inbound.is_passthrough() {
                this.inbound = None;
                this.input = Vec::new();
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Connection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The client's address (and, over TLS, its certificates) as the inner
/// connection reports them.
impl<IO: Connected> Connected for Connection<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests;
