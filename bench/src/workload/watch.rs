//! `watch`: N watchers on one prefix, M writers putting to it; measures how
//! long each event takes from the start of its Put to its arrival at each
//! watcher (the value carries the send time), like `benchmark watch-latency`.
//! Throughput is events delivered per second over all watchers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::conn::Pool;
use crate::keys;
use crate::report::{Recorder, Summary};
use crate::runner::{self, ClientOp, RunOpts};

/// How long watchers wait for the last events once the writers are done.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// Watchers, each on its own stream, all on the same prefix.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Writers (concurrent Put loops); default: `--clients`.
    #[arg(long)]
    pub writers: Option<usize>,
    /// Distinct keys the writers cycle through.
    #[arg(long, default_value_t = 100)]
    pub key_space_size: u64,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// Prefix of every key; a per-run suffix keeps runs apart.
    #[arg(long, default_value = "watch/")]
    pub prefix: String,
}

pub async fn run(
    name: &str,
    opts: &RunOpts,
    pool: &Pool,
    args: &WatchArgs,
) -> anyhow::Result<Summary> {
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let prefix = format!("{}{nonce:x}/", args.prefix);
    let epoch = Instant::now();
    let progress = Arc::new(Progress {
        expected: AtomicU64::new(u64::MAX),
        writers_done_at: AtomicU64::new(u64::MAX),
    });
    let mut watchers = Vec::with_capacity(args.watchers);
    for w in 0..args.watchers {
        let (tx, events) = create_watch(pool.watch(w), &prefix)
            .await
            .with_context(|| format!("creating watcher {w}"))?;
        watchers.push(tokio::spawn(receive(tx, events, epoch, progress.clone())));
    }

    let writers = (0..args.writers.unwrap_or(opts.clients).max(1))
        .map(|i| Writer {
            kv: pool.kv(i),
            prefix: prefix.clone(),
            key_space: args.key_space_size.max(1),
            key_size: args.key_size,
            val_size: args.val_size.max(8),
            epoch,
        })
        .collect();
    let start = Instant::now();
    let puts = runner::run(name, opts, writers).await;
    progress
        .expected
        .store(puts.recorder.ops(), Ordering::SeqCst);
    progress
        .writers_done_at
        .store(epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);

    let mut delivered = Recorder::default();
    let mut last_event = start;
    for w in watchers {
        let (rec, last) = w.await.context("watcher task")?;
        delivered.merge(&rec);
        last_event = last_event.max(last);
    }
    delivered.merge_errors(&puts.recorder);
    let expected = puts.recorder.ops() * args.watchers as u64;
    let mut summary = delivered.summary(name, last_event - start);
    summary.counters.insert("puts".into(), puts.recorder.ops());
    summary
        .counters
        .insert("watchers".into(), args.watchers as u64);
    summary.counters.insert(
        "events_missing".into(),
        expected.saturating_sub(delivered.ops()),
    );
    summary.counters.insert(
        "put_p99_us".into(),
        (puts.summary(name).latency_ms.p99 * 1000.0) as u64,
    );
    Ok(summary)
}

/// What watchers learn about the writers: how many events to expect (once
/// known) and when the writers stopped (nanoseconds after the epoch).
struct Progress {
    expected: AtomicU64,
    writers_done_at: AtomicU64,
}

async fn create_watch(
    mut client: WatchClient<Channel>,
    prefix: &str,
) -> anyhow::Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>)> {
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: keys::prefix_end(prefix.as_bytes()),
            ..Default::default()
        })),
    };
    // Queued before the call: a server may hold back its response headers
    // until the first request arrives.
    let (tx, rx) = mpsc::channel(4);
    tx.send(create).await.expect("receiver is alive");
    let mut events = client.watch(ReceiverStream::new(rx)).await?.into_inner();
    match tokio::time::timeout(Duration::from_secs(10), events.message()).await {
        Ok(Ok(Some(r))) if r.created && !r.canceled => Ok((tx, events)),
        Ok(Ok(Some(r))) => bail!("watch not created: {r:?}"),
        Ok(Ok(None)) => bail!("watch stream ended before the watch was created"),
        Ok(Err(status)) => bail!("watch: {status}"),
        Err(_) => bail!("no watch created response within 10s"),
    }
}

/// Records the delivery latency of every event until all expected events
/// arrived or the writers have been done for [`DRAIN`]. Returns the
/// latencies and when the last event arrived.
async fn receive(
    _requests: mpsc::Sender<WatchRequest>,
    mut events: Streaming<WatchResponse>,
    epoch: Instant,
    progress: Arc<Progress>,
) -> (Recorder, Instant) {
    let mut rec = Recorder::default();
    let mut last = Instant::now();
    loop {
        if rec.ops() >= progress.expected.load(Ordering::SeqCst) {
            break;
        }
        let done_at = progress.writers_done_at.load(Ordering::SeqCst);
        if done_at != u64::MAX && epoch.elapsed() > Duration::from_nanos(done_at) + DRAIN {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), events.message()).await {
            Err(_) => continue,
            Ok(Ok(Some(resp))) => {
                let now = epoch.elapsed();
                for ev in resp.events {
                    if let Some(sent) = ev.kv.as_ref().and_then(|kv| sent_at(&kv.value)) {
                        rec.record(now.saturating_sub(sent));
                        last = Instant::now();
                    }
                }
                if resp.canceled {
                    rec.error("WatchCanceled", &resp.cancel_reason);
                    break;
                }
            }
            Ok(Ok(None)) => {
                rec.error("WatchEnded", "the server closed the watch stream");
                break;
            }
            Ok(Err(status)) => {
                rec.status(&status);
                break;
            }
        }
    }
    (rec, last)
}

/// A value that starts with the send time, nanoseconds after the epoch.
fn stamped_value(sent: Duration, size: usize) -> Vec<u8> {
    let mut v = keys::value(size.max(8));
    v[..8].copy_from_slice(&(sent.as_nanos() as u64).to_le_bytes());
    v
}

fn sent_at(value: &[u8]) -> Option<Duration> {
    let nanos = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    Some(Duration::from_nanos(nanos))
}

struct Writer {
    kv: KvClient<Channel>,
    prefix: String,
    key_space: u64,
    key_size: usize,
    val_size: usize,
    epoch: Instant,
}

impl ClientOp for Writer {
    async fn call(&mut self, seq: u64) -> Result<(), tonic::Status> {
        let req = PutRequest {
            key: keys::key(&self.prefix, seq % self.key_space, self.key_size),
            value: stamped_value(self.epoch.elapsed(), self.val_size),
            ..Default::default()
        };
        self.kv.put(req).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_round_trips_through_the_value() {
        let sent = Duration::from_nanos(123_456_789);
        let v = stamped_value(sent, 32);
        assert_eq!(v.len(), 32);
        assert_eq!(sent_at(&v), Some(sent));
    }

    #[test]
    fn short_foreign_values_carry_no_send_time() {
        assert_eq!(sent_at(b"abc"), None);
    }
}
