//! Differential test of the Watch service: one scripted sequence of watch
//! requests (on raw bidirectional gRPC streams) and of KV / Lease requests
//! driving changes runs against a fresh etcd 3.4 and a fresh ferrocd, and
//! every `WatchResponse` must be equal field by field. Only
//! `header.cluster_id` and `header.member_id` are ignored; `raft_term`,
//! revisions, ids, events (with `prev_kv`), `created`, `canceled`,
//! `cancel_reason`, `compact_revision` and `fragment` all count.
//!
//! Nothing here states an expected result: etcd's answer is the oracle. The
//! script only waits for things to happen (a number of responses, events up
//! to a revision) and records what arrived, so that a server that sends less
//! shows up as a recorded timeout and one that sends more as an extra
//! response.
//!
//! What is compared, and why (what an etcd client can observe):
//! - Responses are grouped per (stream, watch id), and each group is compared
//!   as an exact sequence. Across watch ids of one stream the order is not
//!   compared: etcd fans the events of a revision out to its watchers by
//!   iterating a Go map, so two watchers of one stream get the responses of
//!   the same revision in random order, and control responses (created,
//!   canceled, progress) travel on a separate channel that etcd's send loop
//!   `select`s against the event channel. Responses with watch id -1
//!   (progress responses and refused creates) form their own group per
//!   stream, in order.
//! - Within a watch id everything is exact, including how events are split
//!   into responses and each response's header revision. That is
//!   deterministic in both servers because the script never writes while a
//!   watcher is replaying history: it waits for the replay to reach the
//!   current revision first. etcd 3.4 replays history in responses of up
//!   to 1000 revisions of the watcher's events (counted before NOPUT /
//!   NODELETE filters, however many store revisions they span), each with
//!   the header at the store's current revision, then sends one response
//!   per live revision with the header at that revision. The script
//!   includes a history longer than 1000 revisions, so that cut is
//!   compared too. When a group differs only by batching (same events in
//!   the same order, same non-event responses), the report says so; it is
//!   still a failure, since the script makes etcd's batching deterministic.
//! - Progress requests are only sent while every watcher of the stream is
//!   synced. etcd 3.4.23 answers a progress request at once even while a
//!   watcher is still replaying (fixed in 3.4.31 / 3.5.13, which is why
//!   kube-apiserver uses progress requests only from those versions on);
//!   ferrocd implements the fixed behaviour and waits until synced.
//! - Periodic progress notifications: both servers run with a 400 ms
//!   interval; how many arrive depends on timing, so in that stream runs of
//!   identical responses count once.
//! - Fragments: both servers run with `--max-request-bytes=16384`; etcd
//!   splits the response of a `fragment` watcher from that size plus 512 KiB
//!   on, counting the full header, and the split points are compared.
//!
//! Differences this test found (fixed in ferrocd's watch hub): live events
//! below a future `start_revision` were delivered; a watcher cancelled by
//! compaction freed its id at once (etcd keeps it until the client cancels
//! it: a cancel is answered, a create reusing it is a duplicate); fragments
//! were cut at `--max-request-bytes` instead of etcd's size and points;
//! catch-up responses held 1000 store revisions instead of 1000 revisions
//! of the watcher's events.
//!
//! Both scripts run at the same time, each against its own server. The
//! script runs twice: against a single ferrocd, and against a 3-member
//! ferrocd with watches on a follower and writes through the other members
//! ([`differential_watch_on_a_follower_of_a_cluster`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ferrocd_e2e::{Cluster, Server};
use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use ferrocd_proto::mvccpb::{Event, KeyValue};
use futures::channel::mpsc as request_channel;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// How long to wait for something that should come promptly.
const WAIT: Duration = Duration::from_secs(5);
/// How long to wait for a lease to expire on its own.
const EXPIRY_WAIT: Duration = Duration::from_secs(30);
/// Quiet time at the end, to catch late extra responses.
const FINAL_QUIET: Duration = Duration::from_millis(1500);
/// Both servers send periodic progress notifications this often.
const PROGRESS_NOTIFY_INTERVAL: &str = "--experimental-watch-progress-notify-interval=400ms";
/// Both servers' request limit. etcd fragments a watch response (for
/// watchers that asked for it) above this plus 512 KiB of gRPC overhead.
const MAX_REQUEST_BYTES: &str = "--max-request-bytes=16384";
/// Keys and value size for the fragmented response: one revision deleting
/// them all, with previous values, is well over the fragment size.
const BIG_KEYS: usize = 240;
const BIG_VALUE: usize = 3000;
/// Revisions written for the long-history replay (over etcd's 1000
/// revisions per catch-up response).
const LONG_HISTORY: usize = 1100;
/// How long to listen when checking that nothing is sent.
const SHORT_QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------
// What one run records.

/// Everything one server answered during the script.
#[derive(Default)]
struct Transcript {
    /// Watch responses per (stream name, watch id), in arrival order.
    watch: BTreeMap<(String, i64), Vec<WatchResponse>>,
    /// Outcomes of the KV and Lease requests that drove the changes.
    requests: Vec<String>,
    /// Waits that ended without what they waited for.
    timeouts: Vec<String>,
    /// Streams that ended with an error (or at all) before the end.
    stream_errors: Vec<String>,
}

/// The only header fields allowed to differ: the servers' identities.
/// `raft_term` is shifted by `term_shift` (see [`Target::cluster`]).
fn normalize(mut r: WatchResponse, term_shift: i64) -> WatchResponse {
    if let Some(h) = r.header.as_mut() {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = h.raft_term.wrapping_add_signed(term_shift);
    }
    r
}

// ---------------------------------------------------------------------------
// One watch stream.

/// A client side of one Watch stream: requests go through an unbounded
/// channel, responses are collected by a reader task.
struct WatchStream {
    name: String,
    tx: request_channel::UnboundedSender<WatchRequest>,
    rx: mpsc::UnboundedReceiver<Result<WatchResponse, tonic::Status>>,
    /// Every response so far, normalized, in order.
    got: Vec<WatchResponse>,
    /// Responses before this index were consumed by earlier waits.
    cursor: usize,
    ended: Option<String>,
    /// Keep only the first of consecutive identical responses (periodic
    /// progress notifications, whose number depends on timing).
    dedupe: bool,
    /// Added to each response's `raft_term`.
    term_shift: i64,
}

impl WatchStream {
    /// Opens a stream whose first request is `first`. (grpc-go servers send
    /// response headers only with the first response, so the first request
    /// must be queued before waiting for the call to be answered.)
    async fn open(
        watch: &mut WatchClient<Channel>,
        name: &str,
        first: RequestUnion,
        term_shift: i64,
    ) -> Self {
        let (tx, requests) = request_channel::unbounded();
        tx.unbounded_send(WatchRequest {
            request_union: Some(first),
        })
        .expect("request channel open");
        let mut inbound = tokio::time::timeout(WAIT, watch.watch(requests))
            .await
            .unwrap_or_else(|_| panic!("stream {name}: Watch call not answered in {WAIT:?}"))
            .unwrap_or_else(|e| panic!("stream {name}: Watch call failed: {e}"))
            .into_inner();
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(r)) => {
                        if out.send(Ok(r)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = out.send(Err(e));
                        return;
                    }
                }
            }
        });
        WatchStream {
            name: name.to_string(),
            tx,
            rx,
            got: Vec::new(),
            cursor: 0,
            ended: None,
            dedupe: false,
            term_shift,
        }
    }

    fn send(&self, req: RequestUnion) {
        self.tx
            .unbounded_send(WatchRequest {
                request_union: Some(req),
            })
            .expect("request channel open");
    }

    fn create(&self, req: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(req));
    }

    fn cancel(&self, watch_id: i64) {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
    }

    fn progress(&self) {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}));
    }

    /// Takes one response if one arrives within `timeout`; false otherwise.
    async fn receive(&mut self, timeout: Duration) -> bool {
        if self.ended.is_some() {
            return false;
        }
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(Ok(r))) => {
                self.got.push(normalize(r, self.term_shift));
                true
            }
            Ok(Some(Err(e))) => {
                self.ended = Some(format!("stream {}: error {e}", self.name));
                false
            }
            Ok(None) => {
                self.ended = Some(format!("stream {}: ended", self.name));
                false
            }
            Err(_) => false,
        }
    }

    /// Waits until `done` holds for the responses after the cursor (then
    /// moves the cursor past them), recording a timeout otherwise.
    async fn wait(
        &mut self,
        t: &mut Transcript,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[WatchResponse]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.got[self.cursor..]) {
                self.cursor = self.got.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || (!self.receive(left).await && self.ended.is_some()) {
                t.timeouts.push(format!("stream {}: {what}", self.name));
                self.cursor = self.got.len();
                return;
            }
        }
    }

    /// Waits for `n` more responses.
    async fn expect(&mut self, t: &mut Transcript, n: usize) {
        self.wait(t, &format!("{n} more responses"), WAIT, |g| g.len() >= n)
            .await;
    }

    /// Waits for `n` more responses for watch `id` (responses for other
    /// watches on the stream, e.g. a late event of an earlier wait, do not
    /// count).
    async fn expect_for(&mut self, t: &mut Transcript, id: i64, n: usize) {
        let what = format!("watch {id}: {n} more responses");
        self.wait(t, &what, WAIT, |g| {
            g.iter().filter(|r| r.watch_id == id).count() >= n
        })
        .await;
    }

    /// Waits until watch `id` has had an event at revision `rev` or later
    /// (looking at every response so far: another wait may have taken it).
    async fn expect_rev(&mut self, t: &mut Transcript, id: i64, rev: i64, timeout: Duration) {
        let what = format!("watch {id}: events up to revision {rev}");
        self.cursor = 0;
        self.wait(t, &what, timeout, |g| {
            g.iter()
                .filter(|r| r.watch_id == id)
                .flat_map(|r| &r.events)
                .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= rev))
        })
        .await;
    }

    /// Waits for the response to a progress request (watch id -1, no
    /// events, not a create).
    async fn expect_progress(&mut self, t: &mut Transcript) {
        self.wait(t, "progress response", WAIT, |g| {
            g.iter()
                .any(|r| r.watch_id == -1 && !r.created && r.events.is_empty())
        })
        .await;
    }

    /// Collects whatever arrives until `quiet` passes with nothing (for at
    /// most `WAIT`).
    async fn drain(&mut self, quiet: Duration) {
        let deadline = Instant::now() + WAIT;
        while self.receive(quiet).await {
            if Instant::now() > deadline {
                self.ended = Some(format!("stream {}: never went quiet", self.name));
                break;
            }
        }
        self.cursor = self.got.len();
    }

    /// Files the responses into the transcript, grouped by watch id.
    fn finish(self, t: &mut Transcript) {
        for r in self.got {
            let group = t.watch.entry((self.name.clone(), r.watch_id)).or_default();
            if !(self.dedupe && group.last() == Some(&r)) {
                group.push(r);
            }
        }
        if let Some(e) = self.ended {
            t.stream_errors.push(e);
        }
    }
}

// ---------------------------------------------------------------------------
// Driving changes.

/// Where one run of the script sends its requests.
struct Target<'a> {
    /// KV and Lease requests go to these in turn.
    writers: Vec<&'a Server>,
    /// Watch streams are opened here.
    watcher: &'a Server,
    /// Added to watch responses' `raft_term`.
    term_shift: i64,
}

impl<'a> Target<'a> {
    /// Everything through one server.
    fn single(server: &'a Server) -> Self {
        Target {
            writers: vec![server],
            watcher: server,
            term_shift: 0,
        }
    }

    /// Watches on a follower of `cluster`, KV and Lease requests through
    /// the other members in turn (the leader and the other follower).
    ///
    /// `raft_term` is the one header field whose value depends on the shape
    /// of the cluster rather than on the requests: a single member elects
    /// itself in term 2, while a new cluster's first term depends on how
    /// many elections it took to agree on a leader. So the cluster's terms
    /// are shifted by (`reference_term` - its term at the start) and then
    /// compared exactly: an election during the run still shows.
    async fn cluster(cluster: &'a Cluster, reference_term: u64) -> Self {
        let leader = cluster.leader().await;
        let term = cluster.members[leader]
            .status()
            .await
            .unwrap_or_else(|e| panic!("status of the leader: {e}"))
            .raft_term;
        let watcher = (leader + 1) % cluster.members.len();
        Target {
            writers: (0..cluster.members.len())
                .filter(|&i| i != watcher)
                .map(|i| &cluster.members[i])
                .collect(),
            watcher: &cluster.members[watcher],
            term_shift: reference_term as i64 - term as i64,
        }
    }
}

/// KV and Lease clients of one server.
struct Writer {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

/// KV, Lease and Watch clients of one target.
struct Driver {
    writers: Vec<Writer>,
    /// The writer of the next request.
    turn: usize,
    watch: WatchClient<Channel>,
    /// KV of the watching member when writes go elsewhere: after each
    /// write, a linearizable read there makes sure it has applied the
    /// write, as a single server has when it answers. Without it, a
    /// watcher created (or a progress request sent) on a member still a
    /// few entries behind would answer at an older revision, and replays
    /// would be cut differently: legitimate differences of a follower.
    watcher_kv: Option<KvClient<Channel>>,
    term_shift: i64,
    t: Transcript,
    /// Current revision, from the last write's header.
    rev: i64,
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.client_url.clone())
        .expect("client url")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {:?} {}: {e}", server.kind, server.name))
}

impl Driver {
    async fn connect(target: &Target<'_>) -> Driver {
        let mut writers = Vec::new();
        for w in &target.writers {
            let channel = channel(w).await;
            writers.push(Writer {
                kv: KvClient::new(channel.clone()),
                lease: LeaseClient::new(channel),
            });
        }
        let watcher = channel(target.watcher).await;
        let elsewhere = target
            .writers
            .iter()
            .any(|w| w.client_url != target.watcher.client_url);
        Driver {
            writers,
            turn: 0,
            watch: WatchClient::new(watcher.clone()),
            watcher_kv: elsewhere.then(|| KvClient::new(watcher)),
            term_shift: target.term_shift,
            t: Transcript::default(),
            rev: 0,
        }
    }

    /// The clients of the next writer in turn.
    fn writer(&mut self) -> &mut Writer {
        let i = self.turn;
        self.turn = (i + 1) % self.writers.len();
        &mut self.writers[i]
    }

    /// Waits until the watching member has applied every write answered
    /// so far (see [`Driver::watcher_kv`]).
    async fn settle(&mut self) {
        if let Some(kv) = &mut self.watcher_kv {
            kv.range(RangeRequest {
                key: b"\0".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await
            .expect("linearizable read on the watching member");
        }
    }

    /// Records a request's outcome (header revision and the interesting
    /// fields) and remembers the revision.
    fn record(&mut self, what: String, rev: Option<i64>, detail: String) {
        if let Some(rev) = rev {
            self.rev = rev;
        }
        self.t
            .requests
            .push(format!("{what} -> revision {rev:?} {detail}"));
    }

    async fn open(&mut self, name: &str, first: WatchCreateRequest) -> WatchStream {
        let first = RequestUnion::CreateRequest(first);
        WatchStream::open(&mut self.watch, name, first, self.term_shift).await
    }

    async fn put(&mut self, key: &str, value: &str) -> i64 {
        self.put_req(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    async fn put_req(&mut self, req: PutRequest) -> i64 {
        let what = format!("put {}", String::from_utf8_lossy(&req.key));
        match self.writer().kv.put(req).await {
            Ok(r) => {
                let r = r.into_inner();
                self.record(what, r.header.map(|h| h.revision), String::new())
            }
            Err(e) => self.record(what, None, format!("error {e}")),
        }
        self.settle().await;
        self.rev
    }

    async fn delete(&mut self, key: &str, end: &str) -> i64 {
        let what = format!("delete [{key}, {end})");
        let req = DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            ..Default::default()
        };
        match self.writer().kv.delete_range(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let detail = format!("deleted {}", r.deleted);
                self.record(what, r.header.map(|h| h.revision), detail)
            }
            Err(e) => self.record(what, None, format!("error {e}")),
        }
        self.settle().await;
        self.rev
    }

    async fn txn(&mut self, what: &str, req: TxnRequest) -> i64 {
        match self.writer().kv.txn(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let detail = format!("succeeded {}", r.succeeded);
                self.record(what.into(), r.header.map(|h| h.revision), detail)
            }
            Err(e) => self.record(what.into(), None, format!("error {e}")),
        }
        self.settle().await;
        self.rev
    }

    async fn compact(&mut self, revision: i64) {
        let req = CompactionRequest {
            revision,
            physical: true,
        };
        match self.writer().kv.compact(req).await {
            Ok(r) => {
                let r = r.into_inner();
                self.record(
                    format!("compact {revision}"),
                    r.header.map(|h| h.revision),
                    String::new(),
                )
            }
            Err(e) => self.record(format!("compact {revision}"), None, format!("error {e}")),
        }
        self.settle().await;
    }

    async fn grant(&mut self, id: i64, ttl: i64) {
        match self
            .writer()
            .lease
            .lease_grant(LeaseGrantRequest { id, ttl })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                let detail = format!("id {:#x} error {:?}", r.id, r.error);
                self.record(format!("lease grant {id:#x}"), None, detail)
            }
            Err(e) => self.record(format!("lease grant {id:#x}"), None, format!("error {e}")),
        }
        self.settle().await;
    }

    async fn revoke(&mut self, id: i64) {
        match self
            .writer()
            .lease
            .lease_revoke(LeaseRevokeRequest { id })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                self.record(
                    format!("lease revoke {id:#x}"),
                    r.header.map(|h| h.revision),
                    String::new(),
                )
            }
            Err(e) => self.record(format!("lease revoke {id:#x}"), None, format!("error {e}")),
        }
        self.settle().await;
    }

    /// The current revision, read (a Range changes nothing).
    async fn current(&mut self) -> i64 {
        let r = self
            .writer()
            .kv
            .range(RangeRequest {
                key: b"\0".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await
            .expect("range");
        let rev = r.into_inner().header.map_or(0, |h| h.revision);
        self.record("current revision".into(), Some(rev), String::new());
        rev
    }
}

// ---------------------------------------------------------------------------
// Request constructors.

fn watch(key: &str, end: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn watch_prefix(prefix: &str) -> WatchCreateRequest {
    watch(prefix, &prefix_end(prefix))
}

fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    String::from_utf8(end).expect("ascii prefix")
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn op_delete(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            ..Default::default()
        })),
    }
}

fn value_is(key: &str, value: &str) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        key: key.into(),
        target_union: Some(TargetUnion::Value(value.into())),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// The script.

/// Runs the whole script against `target` and returns what it answered.
async fn script(target: &Target<'_>) -> Transcript {
    let mut d = Driver::connect(target).await;
    let mut streams = Vec::new();

    // History before any watcher exists (the store starts at revision 1).
    d.put("a", "v1").await;
    d.put("b", "v1").await;
    d.put("p/1", "v1").await;
    d.delete("b", "").await;
    d.put("a", "v2").await;

    // -- Several watchers on one stream, all from "now" (start_revision 0).
    let mut live = d.open("live", watch("a", "")).await; // server-chosen id
    live.create(watch_prefix("p/")); // prefix
    live.create(watch("r1", "r5")); // range
    live.create(watch("m", "\0")); // from key
    live.create(WatchCreateRequest {
        watch_id: 100, // client-chosen id
        prev_kv: true,
        ..watch("a", "")
    });
    live.create(WatchCreateRequest {
        watch_id: 101,
        filters: vec![FilterType::Noput as i32],
        ..watch_prefix("f/")
    });
    live.create(WatchCreateRequest {
        watch_id: 102,
        filters: vec![FilterType::Nodelete as i32],
        ..watch_prefix("f/")
    });
    live.create(WatchCreateRequest {
        watch_id: 100, // duplicate id: created + canceled with a reason
        ..watch("x", "")
    });
    live.create(watch("k9", "k1")); // empty range: range_end < key
    live.create(watch("q", "q")); // empty range: range_end == key
    live.create(watch("", "\0")); // every key (empty key means "\0")
    live.expect(&mut d.t, 11).await;

    d.put("a", "v3").await;
    d.put("p/2", "v1").await;
    d.put("r2", "v1").await;
    d.put("r7", "v1").await;
    d.put("f/1", "v1").await;
    d.put("f/2", "v1").await;
    d.delete("f/1", "").await;
    d.put("z", "v1").await;
    d.delete("nothing-here", "").await; // changes nothing: no revision, no event
                                        // A txn with several puts and deletes: all events in one response, in
                                        // op order.
    d.txn(
        "txn put t1, put p/3, delete a, put r3, delete f/2",
        TxnRequest {
            success: vec![
                op_put("t1", "v1"),
                op_put("p/3", "v1"),
                op_delete("a", ""),
                op_put("r3", "v1"),
                op_delete("f/2", ""),
            ],
            ..Default::default()
        },
    )
    .await;
    // A txn taking its else branch.
    d.txn(
        "txn (failing compare) else put t2, put a, delete t1",
        TxnRequest {
            compare: vec![value_is("t1", "not-this")],
            success: vec![op_put("never", "v1")],
            failure: vec![op_put("t2", "v1"), op_put("a", "v4"), op_delete("t1", "")],
        },
    )
    .await;
    // DeleteRange of several keys: one revision, events in key order.
    d.delete("p/", "p0").await;
    let last = d.put("m", "v1").await;
    live.expect_rev(&mut d.t, 4, last, WAIT).await; // the every-key watcher
    live.progress();
    live.expect_progress(&mut d.t).await;

    // -- History replay then live, on a second stream.
    let mut replay = d
        .open(
            "replay",
            WatchCreateRequest {
                start_revision: 2,
                ..watch("\0", "\0")
            },
        )
        .await;
    replay.expect_rev(&mut d.t, 0, last, WAIT).await;
    replay.create(WatchCreateRequest {
        start_revision: 3,
        prev_kv: true,
        ..watch_prefix("p/")
    });
    replay.expect_rev(&mut d.t, 1, last - 1, WAIT).await;
    replay.create(WatchCreateRequest {
        start_revision: 7,
        filters: vec![FilterType::Noput as i32],
        prev_kv: true,
        ..watch("a", "")
    });
    replay.expect_for(&mut d.t, 2, 2).await; // created + the replayed delete
    replay.progress();
    replay.expect_progress(&mut d.t).await;
    d.put("a", "v5").await;
    let last = d.put("p/4", "v1").await;
    replay.expect_rev(&mut d.t, 0, last, WAIT).await;
    live.expect_rev(&mut d.t, 4, last, WAIT).await;

    // -- A start revision in the future: nothing before it.
    let now = d.current().await;
    replay.create(WatchCreateRequest {
        start_revision: now + 3,
        ..watch("fut", "")
    });
    // Its created response must arrive before the writes: a late event for
    // watch 1 (p/4, above) must not stand in for it.
    replay.expect_for(&mut d.t, 3, 1).await;
    for i in 0..5 {
        d.put("fut", &format!("v{i}")).await;
    }
    replay.expect_rev(&mut d.t, 3, d.rev, WAIT).await;
    live.expect_rev(&mut d.t, 4, d.rev, WAIT).await;

    // -- Cancel, and cancel of an unknown id (nothing sent).
    live.cancel(0);
    live.expect(&mut d.t, 1).await;
    live.cancel(999);
    live.progress(); // the only response expected now
    live.expect_progress(&mut d.t).await;
    live.drain(SHORT_QUIET).await;
    let last = d.put("a", "v6").await; // watch 0 is gone; watch 100 gets it
    live.expect_rev(&mut d.t, 100, last, WAIT).await;
    live.expect_rev(&mut d.t, 4, last, WAIT).await;

    // -- Compaction: a watch starting below the compacted revision.
    let c1 = d.put("c/1", "v1").await;
    let c2 = d.put("c/2", "v1").await;
    d.put("c/3", "v1").await;
    d.compact(c2).await;
    let mut compacted = d
        .open(
            "compacted",
            WatchCreateRequest {
                start_revision: c1,
                ..watch_prefix("c/")
            },
        )
        .await;
    compacted.expect(&mut d.t, 2).await; // created, then compacted
                                         // Cancelling the compacted watch: whatever etcd answers (it keeps the id
                                         // registered until cancelled).
    compacted.cancel(0);
    compacted.progress();
    compacted.expect_progress(&mut d.t).await;
    compacted.drain(SHORT_QUIET).await;
    // A client-chosen id of a compacted watch, reused before and after the
    // watch is cancelled.
    compacted.create(WatchCreateRequest {
        watch_id: 50,
        start_revision: c1,
        ..watch_prefix("c/")
    });
    compacted.expect(&mut d.t, 2).await; // created, then compacted
    compacted.create(WatchCreateRequest {
        watch_id: 50,
        ..watch("x", "")
    });
    compacted.expect(&mut d.t, 1).await;
    compacted.cancel(50);
    compacted.progress();
    compacted.expect_progress(&mut d.t).await;
    compacted.drain(SHORT_QUIET).await;
    compacted.create(WatchCreateRequest {
        watch_id: 50,
        ..watch("x", "")
    });
    compacted.expect(&mut d.t, 1).await;
    compacted.create(WatchCreateRequest {
        start_revision: c2, // exactly the compacted revision: still readable
        ..watch_prefix("c/")
    });
    compacted.expect_rev(&mut d.t, 1, d.rev, WAIT).await;
    compacted.create(WatchCreateRequest {
        start_revision: 1,
        prev_kv: true,
        ..watch("", "\0")
    });
    compacted.expect(&mut d.t, 2).await;
    compacted.progress();
    compacted.expect_progress(&mut d.t).await;

    // -- Lease revoke deletes every attached key in one revision.
    let mut leases = d
        .open(
            "leases",
            WatchCreateRequest {
                prev_kv: true,
                ..watch_prefix("l/")
            },
        )
        .await;
    leases.expect(&mut d.t, 1).await;
    d.grant(0x7e57, 60).await;
    for k in ["l/3", "l/1", "l/2"] {
        d.put_req(PutRequest {
            key: k.into(),
            value: "v1".into(),
            lease: 0x7e57,
            ..Default::default()
        })
        .await;
    }
    d.put("l/0", "no lease").await;
    d.revoke(0x7e57).await;
    leases.expect_rev(&mut d.t, 0, d.rev, WAIT).await;

    // -- Lease expiry deletes the attached keys through raft, in one revision.
    leases.create(watch_prefix("e/"));
    leases.expect(&mut d.t, 1).await;
    d.grant(0x7e58, 1).await; // raised to each server's minimum TTL
    for k in ["e/2", "e/1"] {
        d.put_req(PutRequest {
            key: k.into(),
            value: "v1".into(),
            lease: 0x7e58,
            ..Default::default()
        })
        .await;
    }
    let expiry = d.rev + 1;
    leases.expect_rev(&mut d.t, 1, expiry, EXPIRY_WAIT).await;
    d.current().await;

    // -- Periodic progress notifications (both servers run with a short
    // --experimental-watch-progress-notify-interval). How many arrive
    // depends on timing, so runs of identical ones count as one.
    let mut periodic = d
        .open(
            "periodic",
            WatchCreateRequest {
                progress_notify: true,
                ..watch("pn", "")
            },
        )
        .await;
    periodic.expect(&mut d.t, 1).await;
    periodic.expect(&mut d.t, 1).await; // a notification at the current revision
    let last = d.put("pn", "v1").await;
    periodic.expect_rev(&mut d.t, 0, last, WAIT).await;
    periodic
        .wait(&mut d.t, "a notification after the event", WAIT, |g| {
            g.iter().any(|r| r.events.is_empty())
        })
        .await;
    periodic.dedupe = true;
    periodic.cancel(0);
    periodic
        .wait(&mut d.t, "the canceled response", WAIT, |g| {
            g.iter().any(|r| r.canceled)
        })
        .await;

    // -- Fragments: one revision deleting many large keys, seen by a watcher
    // with prev_kv, once with `fragment` and once without.
    let mut fragments = d
        .open(
            "fragments",
            WatchCreateRequest {
                prev_kv: true,
                fragment: true,
                ..watch_prefix("big/")
            },
        )
        .await;
    fragments.create(WatchCreateRequest {
        prev_kv: true,
        ..watch_prefix("big/")
    });
    fragments.expect(&mut d.t, 2).await;
    let value = "x".repeat(BIG_VALUE);
    for i in 0..BIG_KEYS {
        d.put(&format!("big/{i:03}"), &value).await;
    }
    let last = d.delete("big/", &prefix_end("big/")).await;
    fragments.expect_rev(&mut d.t, 0, last, WAIT).await;
    fragments.expect_rev(&mut d.t, 1, last, WAIT).await;

    // -- A long history (more than etcd's 1000 revisions per catch-up
    // response): a wide watcher gets it in several responses, a narrow one
    // in one however many revisions its events span, and a filtered one
    // sees the batches cut before filtering.
    // The watchers start at the compacted revision, long before the first
    // "h/" key: etcd counts the revisions of a watcher's events, not those
    // it scanned.
    let first = c2;
    let mut last_delete = 0;
    for i in 0..LONG_HISTORY {
        d.put(&format!("h/k{:02}", i % 20), "v").await;
        if i == 100 || i == LONG_HISTORY - 5 {
            d.put("h/one", "v").await;
        }
        if i == 400 || i == LONG_HISTORY - 10 {
            last_delete = d.delete("h/k03", "").await;
        }
    }
    let last = d.rev;
    let mut long = d
        .open(
            "long",
            WatchCreateRequest {
                start_revision: first,
                ..watch_prefix("h/")
            },
        )
        .await;
    long.expect_rev(&mut d.t, 0, last, WAIT).await;
    long.create(WatchCreateRequest {
        start_revision: first,
        ..watch("h/one", "")
    });
    long.expect(&mut d.t, 2).await;
    long.create(WatchCreateRequest {
        start_revision: first,
        filters: vec![FilterType::Noput as i32],
        ..watch_prefix("h/")
    });
    long.expect_rev(&mut d.t, 2, last_delete, WAIT).await;

    // -- Everything that is still to come, then the streams' groups.
    live.progress();
    live.expect_progress(&mut d.t).await;
    streams.extend([live, replay, compacted, leases, periodic, fragments, long]);
    for s in &mut streams {
        s.drain(FINAL_QUIET).await;
    }
    let mut t = std::mem::take(&mut d.t);
    for s in streams {
        s.finish(&mut t);
    }
    t
}

// ---------------------------------------------------------------------------
// Comparison and reports.

fn show_kv(kv: &KeyValue) -> String {
    format!(
        "{}={} create={} mod={} ver={} lease={:#x}",
        ferrocd_e2e::byte_literal(&kv.key),
        ferrocd_e2e::byte_literal(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

fn show_event(e: &Event) -> String {
    let kind = if e.r#type == 0 { "PUT" } else { "DELETE" };
    let kv = e.kv.as_ref().map_or("-".into(), show_kv);
    match &e.prev_kv {
        Some(p) => format!("{kind} {kv} prev=({})", show_kv(p)),
        None => format!("{kind} {kv}"),
    }
}

/// Every field of a response on one line (events indented below).
fn show_response(r: &WatchResponse) -> String {
    let h = r.header.unwrap_or_default();
    let mut out = format!(
        "id={} rev={} term={}{}{}{}{}{}",
        r.watch_id,
        h.revision,
        h.raft_term,
        if r.created { " created" } else { "" },
        if r.canceled { " canceled" } else { "" },
        if r.cancel_reason.is_empty() {
            String::new()
        } else {
            format!(" reason={:?}", r.cancel_reason)
        },
        if r.compact_revision != 0 {
            format!(" compact_revision={}", r.compact_revision)
        } else {
            String::new()
        },
        if r.fragment { " fragment" } else { "" },
    );
    // Long responses: the first and last events (the count is shown).
    const HEAD: usize = 6;
    const TAIL: usize = 3;
    let n = r.events.len();
    if n > HEAD + TAIL {
        let _ = write!(out, " ({n} events)");
    }
    for (i, e) in r.events.iter().enumerate() {
        if n > HEAD + TAIL && i == HEAD {
            let _ = write!(out, "\n        … {} more …", n - HEAD - TAIL);
        }
        if n <= HEAD + TAIL || i < HEAD || i >= n - TAIL {
            let _ = write!(out, "\n        {}", show_event(e));
        }
    }
    out
}

fn show_group(g: &[WatchResponse]) -> String {
    if g.is_empty() {
        return "    (nothing)\n".into();
    }
    g.iter()
        .map(|r| format!("    {}\n", show_response(r)))
        .collect()
}

/// True when two groups carry the same events in the same order and the
/// same non-event responses, and differ only in how events are batched.
fn same_up_to_batching(a: &[WatchResponse], b: &[WatchResponse]) -> bool {
    let events = |g: &[WatchResponse]| -> Vec<Event> {
        g.iter().flat_map(|r| r.events.iter().cloned()).collect()
    };
    let control = |g: &[WatchResponse]| -> Vec<WatchResponse> {
        g.iter().filter(|r| r.events.is_empty()).cloned().collect()
    };
    events(a) == events(b) && control(a) == control(b)
}

/// Differences between etcd's and ferrocd's transcripts, one report each.
fn differences(etcd: &Transcript, ferrocd: &Transcript) -> Vec<String> {
    let mut out = Vec::new();
    if etcd.requests != ferrocd.requests {
        let mut s = String::from("KV/Lease requests answered differently:\n");
        let n = etcd.requests.len().max(ferrocd.requests.len());
        for i in 0..n {
            let (e, f) = (etcd.requests.get(i), ferrocd.requests.get(i));
            if e != f {
                let _ = writeln!(s, "  #{i}\n    etcd:    {e:?}\n    ferrocd: {f:?}");
            }
        }
        out.push(s);
    }
    let keys: std::collections::BTreeSet<_> =
        etcd.watch.keys().chain(ferrocd.watch.keys()).collect();
    for key in keys {
        let e = etcd.watch.get(key).map_or(&[][..], Vec::as_slice);
        let f = ferrocd.watch.get(key).map_or(&[][..], Vec::as_slice);
        if e != f {
            let how = if same_up_to_batching(e, f) {
                " (same events and control responses; only the batching differs)"
            } else {
                ""
            };
            // Long groups: the responses around the first difference.
            let at = e.iter().zip(f).take_while(|(a, b)| a == b).count();
            let from = at.saturating_sub(2);
            let window = |g: &[WatchResponse]| {
                let to = g.len().min(at + 4);
                let mut text = String::new();
                if from > 0 {
                    let _ = writeln!(text, "    … {from} equal responses …");
                }
                text.push_str(&show_group(&g[from.min(g.len())..to]));
                if to < g.len() {
                    let _ = writeln!(text, "    … {} more …", g.len() - to);
                }
                text
            };
            out.push(format!(
                "stream {:?}, watch id {}{how}: first difference at response #{at} \
                 (etcd sent {}, ferrocd {})\n  etcd:\n{}  ferrocd:\n{}",
                key.0,
                key.1,
                e.len(),
                f.len(),
                window(e),
                window(f)
            ));
        }
    }
    if etcd.timeouts != ferrocd.timeouts {
        out.push(format!(
            "waits that timed out:\n  etcd:    {:?}\n  ferrocd: {:?}",
            etcd.timeouts, ferrocd.timeouts
        ));
    }
    if etcd.stream_errors != ferrocd.stream_errors {
        out.push(format!(
            "streams that ended early:\n  etcd:    {:?}\n  ferrocd: {:?}",
            etcd.stream_errors, ferrocd.stream_errors
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn differential_watch() {
    let flags = [PROGRESS_NOTIFY_INTERVAL, MAX_REQUEST_BYTES];
    let Some(etcd) = Server::etcd(&flags).await else {
        return;
    };
    let ferrocd = Server::ferrocd(&flags).await;
    compare(Target::single(&etcd), Target::single(&ferrocd)).await;
}

/// The same script with the ferrocd side a 3-member cluster: watches on a
/// follower, writes through the leader and the other follower in turn.
/// The reference stays a single etcd (see [`Target::cluster`] for the one
/// header field a cluster shifts). The cluster runs with etcd's default
/// heartbeat and election timeout, as the single etcd does, so that both
/// derive the same minimum lease TTL from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn differential_watch_on_a_follower_of_a_cluster() {
    let flags = [PROGRESS_NOTIFY_INTERVAL, MAX_REQUEST_BYTES];
    let Some(etcd) = Server::etcd(&flags).await else {
        return;
    };
    let reference_term = etcd.status().await.expect("etcd status").raft_term;
    let timing = ["--heartbeat-interval=100", "--election-timeout=1000"];
    let ferrocd = Cluster::ferrocd(3, &[&flags[..], &timing[..]].concat()).await;
    let target = Target::cluster(&ferrocd, reference_term).await;
    compare(Target::single(&etcd), target).await;
}

/// Runs the script against both targets at the same time and fails on any
/// difference.
async fn compare(etcd: Target<'_>, ferrocd: Target<'_>) {
    let (e, f) = tokio::join!(script(&etcd), script(&ferrocd));

    // The script must have worked as intended on etcd, the oracle.
    assert!(
        e.timeouts.is_empty() && e.stream_errors.is_empty(),
        "the script did not run as intended on etcd: timeouts {:?}, stream errors {:?}",
        e.timeouts,
        e.stream_errors
    );
    let responses: usize = e.watch.values().map(Vec::len).sum();
    let events: usize = e.watch.values().flatten().map(|r| r.events.len()).sum();
    eprintln!(
        "compared {} watch groups, {responses} responses, {events} events, {} requests \
         (ferrocd watched on {}, written through {})",
        e.watch.len(),
        e.requests.len(),
        ferrocd.watcher.name,
        ferrocd
            .writers
            .iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // WATCH_DIFF_SHOW=1 prints what etcd answered, group by group.
    if std::env::var_os("WATCH_DIFF_SHOW").is_some() {
        for ((stream, id), g) in &e.watch {
            eprintln!("stream {stream:?}, watch id {id}:\n{}", show_group(g));
        }
        eprintln!("requests:\n  {}", e.requests.join("\n  "));
    }
    let diffs = differences(&e, &f);
    if !diffs.is_empty() {
        let log = ferrocd.watcher.log();
        let from = log.char_indices().rev().nth(3000).map_or(0, |(i, _)| i);
        panic!(
            "{} difference(s) between etcd and ferrocd:\n\n{}\nferrocd log tail ({}):\n{}",
            diffs.len(),
            diffs.join("\n"),
            ferrocd.watcher.name,
            &log[from..]
        );
    }
}
