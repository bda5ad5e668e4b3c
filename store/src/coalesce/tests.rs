use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::task::{noop_waker, waker, ArcWake};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// Counts how often the connection's task was woken.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl ArcWake for Wakes {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Harness {
    conn: Coalesced<DuplexStream>,
    peer: DuplexStream,
    wakes: Arc<Wakes>,
}

impl Harness {
    fn new() -> Self {
        let (ours, peer) = duplex(1 << 20);
        Harness {
            conn: Coalesced::new(ours),
            peer,
            wakes: Arc::default(),
        }
    }

    fn write(&mut self, data: &[u8]) {
        let w = waker(self.wakes.clone());
        let mut cx = Context::from_waker(&w);
        let n = Pin::new(&mut self.conn).poll_write(&mut cx, data);
        assert!(matches!(n, Poll::Ready(Ok(n)) if n == data.len()));
    }

    fn flush(&mut self) {
        let w = waker(self.wakes.clone());
        let mut cx = Context::from_waker(&w);
        let r = Pin::new(&mut self.conn).poll_flush(&mut cx);
        assert!(matches!(r, Poll::Ready(Ok(()))));
    }

    fn wakes(&self) -> usize {
        self.wakes.0.load(Ordering::SeqCst)
    }

    /// What the client has received so far.
    fn received(&mut self) -> Vec<u8> {
        // Not the connection's task: its wakes are not counted.
        let w = noop_waker();
        let mut cx = Context::from_waker(&w);
        let mut out = Vec::new();
        let mut buf = vec![0; 1 << 20];
        let mut read = ReadBuf::new(&mut buf);
        while let Poll::Ready(Ok(())) = Pin::new(&mut self.peer).poll_read(&mut cx, &mut read) {
            if read.filled().is_empty() {
                break;
            }
            out.extend_from_slice(read.filled());
            read.clear();
        }
        out
    }
}

#[test]
fn a_flush_right_after_writes_is_put_off_once_and_wakes_the_task() {
    let mut h = Harness::new();
    h.write(b"frame one ");
    h.write(b"frame two");
    h.flush();
    assert_eq!(h.received(), b"", "the first flush waits for more frames");
    assert_eq!(h.wakes(), 1, "the task is due to run again");
    // The next poll asks again with nothing new: everything goes out.
    h.flush();
    assert_eq!(h.received(), b"frame one frame two");
    assert_eq!(h.wakes(), 1);
}

#[test]
fn writes_between_flushes_keep_gathering_up_to_a_bound() {
    let mut h = Harness::new();
    let mut expected = Vec::new();
    for i in 0..MAX_DEFERRALS {
        let frame = format!("frame {i};");
        h.write(frame.as_bytes());
        expected.extend_from_slice(frame.as_bytes());
        h.flush();
        assert_eq!(h.received(), b"", "flush {i} is put off");
    }
    h.write(b"last");
    expected.extend_from_slice(b"last");
    h.flush();
    assert_eq!(h.received(), expected, "at most {MAX_DEFERRALS} in a row");
    assert_eq!(h.wakes(), MAX_DEFERRALS as usize);
    // The count starts again after a real flush.
    h.write(b"again");
    h.flush();
    assert_eq!(h.received(), b"");
}

#[test]
fn a_full_buffer_goes_out_without_waiting() {
    let mut h = Harness::new();
    let big = vec![7u8; 2 * FLUSH_AT];
    h.write(&big[..FLUSH_AT - 10]);
    h.write(&big[..20]);
    // The second write did not fit: the first went out before it.
    assert_eq!(h.received().len(), FLUSH_AT - 10);
    h.write(&big[..FLUSH_AT - 20]);
    assert_eq!(h.received().len(), 0, "exactly full: still buffered");
    h.flush();
    assert_eq!(
        h.received().len(),
        FLUSH_AT,
        "a full buffer is flushed at once"
    );
    assert_eq!(h.wakes(), 0);
}

#[test]
fn a_large_write_follows_what_is_buffered_without_a_copy() {
    let mut h = Harness::new();
    h.write(b"small");
    h.write(&vec![1u8; 2 * FLUSH_AT]);
    let got = h.received();
    assert_eq!(got.len(), 5 + 2 * FLUSH_AT);
    assert_eq!(&got[..5], b"small", "in order");
    h.flush();
    assert_eq!(h.wakes(), 0, "nothing was left to put off");
}

#[test]
fn a_flush_with_nothing_buffered_does_not_wake() {
    let mut h = Harness::new();
    h.flush();
    assert_eq!(h.wakes(), 0);
}

#[tokio::test]
async fn shutdown_sends_what_is_buffered() {
    let (ours, mut peer) = duplex(1 << 16);
    let mut conn = Coalesced::new(ours);
    conn.write_all(b"bye").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
}

#[tokio::test]
async fn flushing_until_done_delivers_everything_in_order() {
    // As a caller that keeps polling does: every byte arrives, in order.
    let (ours, mut peer) = duplex(1 << 20);
    let mut conn = Coalesced::new(ours);
    let mut expected = Vec::new();
    for i in 0..1000u32 {
        let frame = i.to_be_bytes().repeat(1 + (i as usize % 7) * 40);
        conn.write_all(&frame).await.unwrap();
        expected.extend_from_slice(&frame);
        if i % 3 == 0 {
            conn.flush().await.unwrap();
        }
    }
    conn.flush().await.unwrap();
    conn.flush().await.unwrap();
    drop(conn);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, expected);
}
