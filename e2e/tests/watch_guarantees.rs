//! Watch guarantees under load, against ferrocd: while several writers run
//! txns (1–3 puts, sometimes a delete), plain puts and deletes on a shared
//! prefix, many watchers — on their own streams and several to a stream,
//! over prefixes, sub-ranges, single keys and from-key ranges, starting in
//! the past, "now" or mid-run, some reading slowly and one that stops
//! reading for 5 s — must each receive every event of their range exactly
//! once, in revision order, with the events of one revision in one
//! response.
//!
//! The authority is what the writers were acknowledged: each successful
//! write returns its revision, and the ops it carried (with the keys a
//! range delete removed, from `prev_kvs`) give that revision's events. The
//! acknowledged revisions must cover every revision without a gap, and
//! replaying them must give the store's final contents, so the recorded
//! history is the complete history. Expected events (with `create_revision`,
//! `version` and `prev_kv`) are derived from it by a model of the keyspace.
//!
//! Each stream is finished with a progress request: ferrocd answers it only
//! once every watcher of the stream has been sent everything up to the
//! current revision, so its arrival means nothing is left in flight.
//!
//! The server's resident memory (VmRSS) is sampled during the run and must
//! stay bounded although one reader stalls. The figures measured (events
//! delivered per second across all watchers, peak RSS) are printed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocd_e2e::Server;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::response_op::Response as OpResponse;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::mvccpb::{Event, KeyValue};
use futures::channel::mpsc as request_channel;
use tonic::transport::Channel;

/// Keys are `/g/k00` … `/g/k39`.
const KEYS: usize = 40;
const PREFIX: &str = "/g/";
const WRITERS: usize = 4;
/// How long the writers run.
const RUN: Duration = Duration::from_secs(10);
/// Writes before any watcher exists, for watchers starting in the past.
const PREFILL: usize = 150;
/// Streams with a single watcher each (plus the multi-watcher streams and
/// the streams opened mid-run).
const SINGLE_STREAMS: usize = 60;
const MULTI_STREAMS: usize = 4;
const WATCHERS_PER_MULTI: usize = 5;
const LATE_STREAMS: usize = 10;
/// After the writers stop, how long the streams have to deliver the rest.
const DRAIN_LIMIT: Duration = Duration::from_secs(12);
/// The stalled reader stops after this long, for this long.
const STALL_AFTER: Duration = Duration::from_secs(2);
const STALL_FOR: Duration = Duration::from_secs(5);
/// The single-watcher stream that stalls (a watcher of the whole prefix).
const STALLED_N: usize = 4;
const STALLED: &str = "single-4";
/// Bound on the server's resident memory during the run.
const RSS_LIMIT_KIB: u64 = 300 * 1024;

fn key(i: usize) -> String {
    format!("{PREFIX}k{i:02}")
}

/// A small deterministic random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `k` distinct key indexes.
    fn keys(&mut self, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let i = self.below(KEYS);
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// The authoritative history.

/// One change of one acknowledged revision, in the order applied.
#[derive(Clone, Debug)]
enum Change {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

type History = Arc<Mutex<Vec<(i64, Vec<Change>)>>>;

/// One writer's request and how to read its changes from the answer.
async fn write_once(
    kv: &mut KvClient<Channel>,
    rng: &mut Rng,
    tag: &str,
) -> Option<(i64, Vec<Change>)> {
    let value = |rng: &mut Rng| -> Vec<u8> {
        let mut v = format!("{tag}-{}", rng.next() % 1_000_000).into_bytes();
        if rng.below(8) == 0 {
            v.resize(300, b'.');
        }
        v
    };
    let roll = rng.below(100);
    if roll < 55 {
        // A txn: 1–3 puts, and sometimes a delete of another key, in a
        // random position.
        let puts = 1 + rng.below(3);
        let with_delete = rng.below(3) == 0;
        let keys = rng.keys(puts + usize::from(with_delete));
        let mut ops = Vec::new();
        let mut plan = Vec::new();
        for (n, &k) in keys.iter().enumerate() {
            if n < puts {
                let v = value(rng);
                ops.push(RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: key(k).into_bytes(),
                        value: v.clone(),
                        ..Default::default()
                    })),
                });
                plan.push(Change::Put(key(k).into_bytes(), v));
            } else {
                ops.push(RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: key(k).into_bytes(),
                        ..Default::default()
                    })),
                });
                plan.push(Change::Delete(key(k).into_bytes()));
            }
        }
        if with_delete && rng.below(2) == 0 {
            ops.rotate_right(1);
            plan.rotate_right(1);
        }
        let resp = kv
            .txn(TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await
            .expect("txn")
            .into_inner();
        assert!(resp.succeeded);
        // A delete that found nothing changes nothing.
        let changes = plan
            .into_iter()
            .zip(&resp.responses)
            .filter(|(_, r)| match &r.response {
                Some(OpResponse::ResponseDeleteRange(d)) => d.deleted > 0,
                _ => true,
            })
            .map(|(c, _)| c)
            .collect();
        Some((resp.header.expect("header").revision, changes))
    } else if roll < 85 {
        let k = key(rng.below(KEYS)).into_bytes();
        let v = value(rng);
        let resp = kv
            .put(PutRequest {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        Some((
            resp.header.expect("header").revision,
            vec![Change::Put(k, v)],
        ))
    } else {
        // A single-key delete, or a range delete of `/g/k1*` (several keys
        // in one revision, in key order).
        let (k, end) = if roll < 95 {
            (key(rng.below(KEYS)), String::new())
        } else {
            (format!("{PREFIX}k1"), format!("{PREFIX}k2"))
        };
        let resp = kv
            .delete_range(DeleteRangeRequest {
                key: k.into_bytes(),
                range_end: end.into_bytes(),
                prev_kv: true,
            })
            .await
            .expect("delete")
            .into_inner();
        if resp.deleted == 0 {
            return None;
        }
        let changes = resp
            .prev_kvs
            .into_iter()
            .map(|kv| Change::Delete(kv.key))
            .collect();
        Some((resp.header.expect("header").revision, changes))
    }
}

async fn writer(mut kv: KvClient<Channel>, seed: u64, until: Instant, history: History) -> usize {
    let mut rng = Rng::new(seed);
    let tag = format!("w{seed}");
    let mut writes = 0;
    while Instant::now() < until {
        if let Some(entry) = write_once(&mut kv, &mut rng, &tag).await {
            history.lock().unwrap().push(entry);
        }
        writes += 1;
    }
    writes
}

/// The keyspace replayed from the history: per revision, the events every
/// watcher of everything would see (with `prev_kv` filled in), and the
/// final contents.
struct Model {
    /// Revision -> its events, in order.
    events: BTreeMap<i64, Vec<Event>>,
    /// Final contents.
    state: BTreeMap<Vec<u8>, KeyValue>,
}

fn replay(mut history: Vec<(i64, Vec<Change>)>, first_rev: i64) -> Model {
    history.sort_by_key(|(rev, _)| *rev);
    let revs: Vec<i64> = history.iter().map(|(r, _)| *r).collect();
    let expected: Vec<i64> = (first_rev..first_rev + revs.len() as i64).collect();
    assert_eq!(
        revs, expected,
        "the acknowledged writes must cover every revision exactly once"
    );
    let mut state: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    let mut events = BTreeMap::new();
    for (rev, changes) in history {
        let mut evs = Vec::new();
        for c in changes {
            match c {
                Change::Put(k, v) => {
                    let prev = state.get(&k).cloned();
                    let kv = KeyValue {
                        key: k.clone(),
                        value: v,
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease: 0,
                    };
                    state.insert(k, kv.clone());
                    evs.push(Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv),
                        prev_kv: prev,
                    });
                }
                Change::Delete(k) => {
                    let prev = state.remove(&k);
                    assert!(prev.is_some(), "deleted key {k:?} at {rev} did not exist");
                    evs.push(Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key: k,
                            mod_revision: rev,
                            ..Default::default()
                        }),
                        prev_kv: prev,
                    });
                }
            }
        }
        events.insert(rev, evs);
    }
    Model { events, state }
}

// ---------------------------------------------------------------------------
// Watchers.

#[derive(Clone, Debug)]
struct WatchSpec {
    /// Client-chosen, unique within its stream.
    id: i64,
    key: Vec<u8>,
    end: Vec<u8>,
    /// 0 = from now.
    start: i64,
    prev_kv: bool,
}

impl WatchSpec {
    fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == self.key.as_slice()
        } else if self.end == [0] {
            k >= self.key.as_slice()
        } else {
            k >= self.key.as_slice() && k < self.end.as_slice()
        }
    }

    fn describe(&self) -> String {
        format!(
            "[{}, {}) start {}{}",
            String::from_utf8_lossy(&self.key),
            String::from_utf8_lossy(&self.end).replace('\0', "\\0"),
            self.start,
            if self.prev_kv { " prev_kv" } else { "" }
        )
    }
}

/// The `n`th kind of watcher: a range and a start revision.
fn spec(n: usize, id: i64, past: i64, next: i64) -> WatchSpec {
    let (key, end) = match n % 4 {
        0 => (PREFIX.to_string(), "/g0".to_string()),
        1 => (format!("{PREFIX}k1"), format!("{PREFIX}k2")),
        2 => (key(n % KEYS), String::new()),
        _ => (format!("{PREFIX}k3"), "\0".to_string()),
    };
    let start = match n % 3 {
        0 => 0,
        1 => past,
        _ => next,
    };
    WatchSpec {
        id,
        key: key.into_bytes(),
        end: end.into_bytes(),
        start,
        prev_kv: n % 5 == 1,
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    /// Sleep after each message while the writers run. (Not after: the
    /// server's queue and HTTP/2 windows can hold more than a reader this
    /// slow could take in the time the test has.)
    delay: Option<Duration>,
    /// Stop reading for `STALL_FOR` after `STALL_AFTER`.
    stall: bool,
}

/// One stream's watchers and everything it received.
struct StreamRun {
    name: String,
    specs: Vec<WatchSpec>,
    tx: request_channel::UnboundedSender<WatchRequest>,
    reader: tokio::task::JoinHandle<Result<Vec<WatchResponse>, String>>,
}

fn create(s: &WatchSpec) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: s.key.clone(),
            range_end: s.end.clone(),
            start_revision: s.start,
            prev_kv: s.prev_kv,
            watch_id: s.id,
            ..Default::default()
        })),
    }
}

/// Opens a stream with its watchers; a task reads it until the answer to
/// the final progress request arrives.
async fn open_stream(
    client: &mut WatchClient<Channel>,
    name: String,
    specs: Vec<WatchSpec>,
    reading: Reading,
    delivered: Arc<std::sync::atomic::AtomicUsize>,
    writing: Arc<std::sync::atomic::AtomicBool>,
) -> StreamRun {
    let (tx, requests) = request_channel::unbounded();
    for s in &specs {
        tx.unbounded_send(create(s)).expect("request channel");
    }
    let mut inbound = client
        .watch(requests)
        .await
        .unwrap_or_else(|e| panic!("{name}: Watch call failed: {e}"))
        .into_inner();
    let reader_name = name.clone();
    let reader = tokio::spawn(async move {
        let opened = Instant::now();
        let mut stalled = false;
        let mut got = Vec::new();
        loop {
            let resp = match inbound.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err(format!("{reader_name}: stream ended early")),
                Err(e) => return Err(format!("{reader_name}: stream failed: {e}")),
            };
            delivered.fetch_add(resp.events.len(), std::sync::atomic::Ordering::Relaxed);
            let last = resp.watch_id == -1;
            got.push(resp);
            if last {
                return Ok(got);
            }
            if let Some(d) = reading.delay {
                if writing.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(d).await;
                }
            }
            if reading.stall && !stalled && opened.elapsed() >= STALL_AFTER {
                stalled = true;
                tokio::time::sleep(STALL_FOR).await;
            }
        }
    });
    StreamRun {
        name,
        specs,
        tx,
        reader,
    }
}

/// HTTP/2 flow-control window of the slow readers' streams.
const SMALL_WINDOW: u32 = 64 * 1024;

/// A connection whose streams have small receive windows.
async fn small_window_channel(server: &Server) -> Channel {
    Channel::from_shared(server.client_url.clone())
        .expect("url")
        .initial_stream_window_size(SMALL_WINDOW)
        .initial_connection_window_size(16 << 20)
        .connect()
        .await
        .expect("connect")
}

// ---------------------------------------------------------------------------
// Memory.

/// The pid of the ferrocd process serving `data_dir`.
fn server_pid(data_dir: &std::path::Path) -> Option<u32> {
    let needle = data_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("ferrocd") && cmdline.contains(&needle)).then_some(pid)
        })
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// Checking one watcher.

/// Problems with what watcher `spec` received, given the model.
fn check_watcher(
    stream: &str,
    spec: &WatchSpec,
    got: &[&WatchResponse],
    model: &Model,
    final_rev: i64,
    batches: &mut usize,
) -> Vec<String> {
    let who = format!("{stream} watch {} {}", spec.id, spec.describe());
    let mut problems = Vec::new();
    let Some(created) = got.first().filter(|r| r.created) else {
        return vec![format!("{who}: first response is not `created`")];
    };
    if created.canceled {
        return vec![format!("{who}: create refused: {}", created.cancel_reason)];
    }
    let created_rev = created.header.map_or(0, |h| h.revision);
    let start = if spec.start == 0 {
        created_rev + 1
    } else {
        spec.start
    };
    let mut received = Vec::new();
    let mut last_rev = 0;
    for r in &got[1..] {
        if r.created || r.canceled || r.compact_revision != 0 || r.fragment {
            problems.push(format!("{who}: unexpected response {r:?}"));
            continue;
        }
        let Some(first) = r.events.first() else {
            continue; // a progress notification
        };
        let rev_of = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        // One revision never spans two responses, and revisions ascend.
        if rev_of(first) <= last_rev {
            problems.push(format!(
                "{who}: response starts at revision {} after one that ended at {last_rev}",
                rev_of(first)
            ));
        }
        let max = r.events.iter().map(rev_of).max().unwrap_or(0);
        let header = r.header.map_or(0, |h| h.revision);
        if header < max {
            problems.push(format!(
                "{who}: header revision {header} below its events' revision {max}"
            ));
        }
        if rev_of(first) != max {
            *batches += 1; // several revisions: caught up from history
        }
        last_rev = r.events.last().map_or(last_rev, rev_of);
        received.extend(r.events.iter().cloned());
    }
    let expected: Vec<Event> = model
        .events
        .range(start..=final_rev)
        .flat_map(|(_, evs)| evs)
        .filter(|e| spec.contains(&e.kv.as_ref().expect("kv").key))
        .map(|e| Event {
            prev_kv: if spec.prev_kv {
                e.prev_kv.clone()
            } else {
                None
            },
            ..e.clone()
        })
        .collect();
    if received != expected {
        let at = received
            .iter()
            .zip(&expected)
            .take_while(|(a, b)| a == b)
            .count();
        let brief = |e: Option<&Event>| {
            e.map_or("(none)".to_string(), |e| {
                let kv = e.kv.as_ref().expect("kv");
                format!(
                    "{} {} @{} v{}",
                    if e.r#type == 0 { "PUT" } else { "DELETE" },
                    String::from_utf8_lossy(&kv.key),
                    kv.mod_revision,
                    kv.version
                )
            })
        };
        problems.push(format!(
            "{who}: received {} events, expected {} (from revision {start}); first difference at #{at}: got {}, expected {}",
            received.len(),
            expected.len(),
            brief(received.get(at)),
            brief(expected.get(at)),
        ));
    }
    problems
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_watcher_gets_every_event_once_in_order_under_load() {
    let server = Server::ferrocd(&[]).await;
    let channel = Channel::from_shared(server.client_url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let kv = KvClient::new(channel.clone());
    let history: History = Arc::new(Mutex::new(Vec::new()));

    // Memory sampling.
    let pid = server_pid(&server.data_dir()).expect("ferrocd's pid from /proc");
    let baseline = rss_kib(pid).expect("VmRSS");
    let rss_samples = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (samples, sampling) = (rss_samples.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    samples.lock().unwrap().push(kib);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // History before the watchers, for those starting in the past.
    let first_rev = {
        let mut kv = kv.clone();
        let mut rng = Rng::new(99);
        let mut first = None;
        let mut done = 0;
        while done < PREFILL {
            if let Some(entry) = write_once(&mut kv, &mut rng, "pre").await {
                first.get_or_insert(entry.0);
                history.lock().unwrap().push(entry);
                done += 1;
            }
        }
        first.expect("prefill wrote")
    };
    let now = history
        .lock()
        .unwrap()
        .iter()
        .map(|(r, _)| *r)
        .max()
        .unwrap();
    let past = first_rev + 20;

    // Watchers opened before the writers start.
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut watch = WatchClient::new(channel.clone());
    // Slow readers get small HTTP/2 stream windows (a slow client on a slow
    // link), so that the server's own queue fills and its catch-up path
    // runs; the stalled one gets a connection of its own. The connection
    // windows stay large: the client's h2 bounds the small DATA frames it
    // holds unread by half the connection window, and closes the connection
    // beyond that ("too_many_data_frames").
    let mut slow_watch = WatchClient::new(small_window_channel(&server).await);
    let mut stalled_watch = WatchClient::new(small_window_channel(&server).await);
    let mut streams = Vec::new();
    for n in 0..SINGLE_STREAMS {
        let reading = Reading {
            delay: (n % 6 == 5).then(|| Duration::from_millis(2)),
            stall: n == STALLED_N,
        };
        let client = if reading.stall {
            &mut stalled_watch
        } else if reading.delay.is_some() {
            &mut slow_watch
        } else {
            &mut watch
        };
        let specs = vec![spec(n, 1, past, now + 1)];
        streams.push(
            open_stream(
                client,
                format!("single-{n}"),
                specs,
                reading,
                delivered.clone(),
                writing.clone(),
            )
            .await,
        );
    }
    for m in 0..MULTI_STREAMS {
        let specs = (0..WATCHERS_PER_MULTI)
            .map(|i| spec(m * WATCHERS_PER_MULTI + i + 1, i as i64 + 1, past, now + 1))
            .collect();
        let reading = Reading {
            delay: (m == 1).then(|| Duration::from_millis(3)),
            stall: false,
        };
        let client = if reading.delay.is_some() {
            &mut slow_watch
        } else {
            &mut watch
        };
        streams.push(
            open_stream(
                client,
                format!("multi-{m}"),
                specs,
                reading,
                delivered.clone(),
                writing.clone(),
            )
            .await,
        );
    }

    // The writers, and more watchers ("from now") opened while they write.
    let started = Instant::now();
    let until = started + RUN;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(kv.clone(), w as u64 + 1, until, history.clone())))
        .collect();
    tokio::time::sleep(RUN / 3).await;
    for n in 0..LATE_STREAMS {
        let mut s = spec(n * 3, 1, past, now + 1); // n * 3 % 3 == 0: from now
        s.start = 0;
        streams.push(
            open_stream(
                &mut watch,
                format!("late-{n}"),
                vec![s],
                Reading::default(),
                delivered.clone(),
                writing.clone(),
            )
            .await,
        );
    }
    let mut writes = 0;
    for w in writers {
        writes += w.await.expect("writer");
    }
    let write_time = started.elapsed();
    writing.store(false, std::sync::atomic::Ordering::Relaxed);

    // Finish every stream with a progress request; its answer comes once
    // the stream has been sent everything.
    let mut kv_final = kv.clone();
    let final_rev = kv_final
        .range(RangeRequest {
            key: PREFIX.into(),
            range_end: "/g0".into(),
            ..Default::default()
        })
        .await
        .expect("final range")
        .into_inner();
    let final_state = final_rev.kvs;
    let final_rev = final_rev.header.expect("header").revision;
    for s in &streams {
        // A stream that already ended says why through its reader.
        let _ = s.tx.unbounded_send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        });
    }
    let mut results = Vec::new();
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    for s in streams {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        let got = match tokio::time::timeout(left, s.reader).await {
            Ok(r) => r.expect("reader task"),
            Err(_) => Err(format!(
                "{}: not finished within {DRAIN_LIMIT:?} after the writers",
                s.name
            )),
        };
        results.push((s.name, s.specs, got, s.tx));
    }
    let elapsed = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.expect("sampler");

    // The authoritative history, checked against the store.
    let history = std::mem::take(&mut *history.lock().unwrap());
    let revisions = history.len();
    let model = replay(history, first_rev);
    assert_eq!(
        model.events.keys().last().copied(),
        Some(final_rev),
        "the last acknowledged write is the store's current revision"
    );
    let replayed: Vec<&KeyValue> = model.state.values().collect();
    let stored: Vec<&KeyValue> = final_state.iter().collect();
    assert_eq!(
        replayed, stored,
        "replaying the acknowledged writes gives the store's contents"
    );

    let mut problems = Vec::new();
    let mut watchers = 0;
    let mut events = 0;
    let mut batches = 0;
    let mut stalled_batches = 0;
    for (name, specs, got, _tx) in &results {
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                problems.push(e.clone());
                continue;
            }
        };
        let progress = got.last().expect("the progress response");
        let progress_rev = progress.header.map_or(0, |h| h.revision);
        if progress_rev < final_rev {
            problems.push(format!(
                "{name}: progress response at revision {progress_rev}, below the last write's {final_rev}"
            ));
        }
        let ids: HashMap<i64, &WatchSpec> = specs.iter().map(|s| (s.id, s)).collect();
        for r in got {
            if r.watch_id != -1 && !ids.contains_key(&r.watch_id) {
                problems.push(format!(
                    "{name}: response for unknown watch id {}",
                    r.watch_id
                ));
            }
        }
        for spec in specs {
            let mine: Vec<&WatchResponse> = got.iter().filter(|r| r.watch_id == spec.id).collect();
            events += mine.iter().map(|r| r.events.len()).sum::<usize>();
            let before = batches;
            problems.extend(check_watcher(
                name,
                spec,
                &mine,
                &model,
                final_rev,
                &mut batches,
            ));
            if name == STALLED {
                stalled_batches += batches - before;
            }
            watchers += 1;
        }
    }

    let samples = rss_samples.lock().unwrap().clone();
    let peak = samples.iter().copied().max().unwrap_or(baseline);
    let total = delivered.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "watch load: {writes} writes by {WRITERS} writers in {:.1}s -> {revisions} revisions ({:.0}/s); \
         {watchers} watchers on {} streams; {events} events checked, {total} delivered in {:.1}s \
         = {:.0} events/s across all watchers; {batches} responses caught up several revisions \
         ({stalled_batches} of them to the stalled reader)",
        write_time.as_secs_f64(),
        revisions as f64 / write_time.as_secs_f64(),
        results.len(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
    );
    eprintln!(
        "server RSS: baseline {:.1} MiB, peak {:.1} MiB over {} samples (limit {} MiB)",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        samples.len(),
        RSS_LIMIT_KIB / 1024
    );

    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        revisions > 500,
        "too few revisions to test anything: {revisions}"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "ferrocd's RSS peaked at {} MiB (limit {} MiB)",
        peak / 1024,
        RSS_LIMIT_KIB / 1024
    );
}
