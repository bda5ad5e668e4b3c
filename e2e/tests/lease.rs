//! The Lease service end to end, over raw gRPC and the `etcd-client` crate:
//! expiry deleting attached keys (one revision, one watch response), keep
//! alive, TimeToLive, Leases, the error statuses, detaching keys, and a
//! restart that must not expire leases early.
//!
//! Each scenario runs against ferrocd and, when it is installed, against
//! etcd 3.4 at the same time. Every scenario checks its own invariants on
//! both servers; where the outcome is deterministic (client-chosen lease IDs,
//! fresh servers, the same requests) the two outcomes are also compared.

use std::time::{Duration, Instant};

use ferrocd_e2e::Server;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::{
    request_op, watch_request, DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::mvccpb::KeyValue;
use futures::channel::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Raw gRPC clients of one server.
struct Conn {
    name: &'static str,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
}

/// A watch stream whose `created` response has been read.
struct Watch {
    _requests: mpsc::UnboundedSender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

fn name(server: &Server) -> &'static str {
    match server.kind {
        ferrocd_e2e::Kind::Ferrocd => "ferrocd",
        ferrocd_e2e::Kind::Etcd => "etcd",
    }
}

/// `(code, message)` of a failed call, for comparing errors.
type Failure = (Code, String);

fn failure(s: tonic::Status) -> Failure {
    (s.code(), s.message().to_string())
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

fn put_op(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    }
}

impl Conn {
    async fn new(server: &Server) -> Conn {
        let channel = Channel::from_shared(server.client_url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        Conn {
            name: name(server),
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel),
        }
    }

    async fn put_req(&mut self, req: PutRequest) -> Result<i64, Failure> {
        self.kv
            .put(req)
            .await
            .map(|r| r.into_inner().header.expect("header").revision)
            .map_err(failure)
    }

    /// Puts `key`, attached to `lease` (0: none); the new revision.
    async fn put(&mut self, key: &str, value: &str, lease: i64) -> i64 {
        let name = self.name;
        self.put_req(put_op(key, value, lease))
            .await
            .unwrap_or_else(|e| panic!("{name}: put {key}: {e:?}"))
    }

    /// The live keys under `prefix`, in order, with their leases.
    async fn keys(&mut self, prefix: &str) -> Vec<(String, i64)> {
        let r = self
            .kv
            .range(RangeRequest {
                key: prefix.into(),
                range_end: prefix_end(prefix),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        r.kvs
            .iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.lease))
            .collect()
    }

    async fn get(&mut self, key: &str) -> Option<KeyValue> {
        let r = self
            .kv
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        r.kvs.into_iter().next()
    }

    /// The current revision.
    async fn rev(&mut self) -> i64 {
        self.kv
            .range(RangeRequest {
                key: "\0".into(),
                count_only: true,
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner()
            .header
            .expect("header")
            .revision
    }

    async fn grant(&mut self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, Failure> {
        self.lease
            .lease_grant(LeaseGrantRequest { ttl, id })
            .await
            .map(|r| r.into_inner())
            .map_err(failure)
    }

    async fn grant_ok(&mut self, ttl: i64, id: i64) -> LeaseGrantResponse {
        let name = self.name;
        let r = self
            .grant(ttl, id)
            .await
            .unwrap_or_else(|e| panic!("{name}: grant ttl {ttl} id {id}: {e:?}"));
        assert!(r.error.is_empty(), "{name}: grant error {:?}", r.error);
        if id != 0 {
            assert_eq!(r.id, id, "{name}: the chosen lease id is granted");
        }
        r
    }

    /// Revokes `id`; the response's header revision.
    async fn revoke(&mut self, id: i64) -> Result<i64, Failure> {
        self.lease
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .map(|r| r.into_inner().header.expect("header").revision)
            .map_err(failure)
    }

    async fn ttl(&mut self, id: i64, keys: bool) -> LeaseTimeToLiveResponse {
        self.lease
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
            .await
            .expect("time to live")
            .into_inner()
    }

    /// The attached keys TimeToLive reports, sorted (etcd lists them in
    /// map order).
    async fn lease_keys(&mut self, id: i64) -> Vec<String> {
        let mut keys: Vec<String> = self
            .ttl(id, true)
            .await
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        keys
    }

    /// Every lease id, sorted (etcd lists them in map order).
    async fn leases(&mut self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .lease
            .lease_leases(LeaseLeasesRequest {})
            .await
            .expect("leases")
            .into_inner()
            .leases
            .iter()
            .map(|l| l.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// One keep-alive on a fresh stream: the TTL answered.
    async fn keep_alive_once(&mut self, id: i64) -> i64 {
        let req = futures::stream::iter([LeaseKeepAliveRequest { id }]);
        let mut responses = self
            .lease
            .lease_keep_alive(req)
            .await
            .expect("keep alive")
            .into_inner();
        let r = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("keep-alive answered in 5s")
            .expect("keep-alive stream")
            .expect("a keep-alive response");
        assert_eq!(r.id, id, "{}: keep-alive answers for the lease", self.name);
        r.ttl
    }

    /// Watches `prefix` from `start_revision` (0: now).
    async fn watch_prefix(&mut self, prefix: &str, start_revision: i64, prev_kv: bool) -> Watch {
        let (tx, rx) = mpsc::unbounded();
        tx.unbounded_send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.into(),
                    range_end: prefix_end(prefix),
                    start_revision,
                    prev_kv,
                    ..Default::default()
                },
            )),
        })
        .expect("send create");
        let mut responses = self.watch.watch(rx).await.expect("watch").into_inner();
        let created = responses
            .message()
            .await
            .expect("watch stream")
            .expect("created response");
        assert!(
            created.created,
            "{}: first response is `created`",
            self.name
        );
        Watch {
            _requests: tx,
            responses,
        }
    }
}

impl Watch {
    /// The next response with events, within `timeout`.
    async fn next_events(&mut self, timeout: Duration) -> Option<WatchResponse> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = tokio::time::timeout_at(deadline, self.responses.message())
                .await
                .ok()?
                .expect("watch stream")
                .expect("watch stream open");
            if !r.events.is_empty() {
                return Some(r);
            }
        }
    }
}

/// Runs `scenario` against ferrocd and (when installed) etcd concurrently;
/// (ferrocd's result, etcd's result).
macro_rules! on_both {
    ($scenario:ident) => {{
        let (ferrocd, etcd) = tokio::join!(Server::ferrocd(&[]), Server::etcd(&[]));
        let etcd_run = async {
            match &etcd {
                Some(e) => Some($scenario(e).await),
                None => None,
            }
        };
        let (f, e) = tokio::join!($scenario(&ferrocd), etcd_run);
        eprintln!("ferrocd: {f:?}\netcd:    {e:?}");
        (f, e)
    }};
}

/// Polls until `key` is gone; the instant it was first seen missing.
async fn wait_gone(c: &mut Conn, key: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if c.get(key).await.is_none() {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Deletes as one watch response shows them: (key, type, mod_revision,
/// prev value) per event, and the response's header revision.
type EventSummary = (Vec<(String, i32, i64, Option<(String, i64)>)>, i64);

fn summarize(r: &WatchResponse) -> EventSummary {
    let events = r
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                e.r#type,
                kv.mod_revision,
                e.prev_kv
                    .as_ref()
                    .map(|p| (String::from_utf8_lossy(&p.value).into_owned(), p.lease)),
            )
        })
        .collect();
    (events, r.header.expect("header").revision)
}

// ---------------------------------------------------------------- expiry

/// What an expiry looked like, to compare between servers.
#[derive(Debug, PartialEq)]
struct Expiry {
    deletes: EventSummary,
    remaining: Vec<(String, i64)>,
    time_to_live: (i64, i64),
    keep_alive_ttl: i64,
    listed: bool,
}

async fn expiry(server: &Server) -> Expiry {
    let who = name(server);
    let mut c = Conn::new(server).await;
    const LEASE: i64 = 0x7001;
    c.put("exp/plain", "p", 0).await;
    let grant = c.grant_ok(2, LEASE).await;
    let granted_at = Instant::now();
    assert_eq!(grant.ttl, 2, "{who}: TTL 2 is granted as asked");
    for key in ["exp/b", "exp/a", "exp/c"] {
        c.put(key, "v", LEASE).await;
    }
    let before = c.rev().await;
    let mut w = c.watch_prefix("exp/", 0, true).await;
    let r = w
        .next_events(Duration::from_secs(8))
        .await
        .unwrap_or_else(|| panic!("{who}: no delete events within 8 s of a 2 s lease"));
    let took = granted_at.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took <= Duration::from_secs(5),
        "{who}: a 2 s lease expired after {took:?}"
    );
    let deletes = summarize(&r);
    assert_eq!(
        deletes.0.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["exp/a", "exp/b", "exp/c"],
        "{who}: every attached key is deleted, in key order, in one response: {deletes:?}"
    );
    for (key, kind, mod_rev, prev) in &deletes.0 {
        assert_eq!(*kind, EventType::Delete as i32, "{who}: {key}");
        assert_eq!(*mod_rev, before + 1, "{who}: {key} deleted in one revision");
        assert_eq!(
            prev,
            &Some(("v".to_string(), LEASE)),
            "{who}: prev_kv of {key}"
        );
    }
    assert_eq!(
        deletes.1,
        before + 1,
        "{who}: header revision of the deletes"
    );
    // Nothing else follows: no second response for the same lease.
    if let Some(extra) = w.next_events(Duration::from_millis(700)).await {
        panic!("{who}: unexpected events after the expiry: {extra:?}");
    }
    assert_eq!(
        c.rev().await,
        before + 1,
        "{who}: the expiry is one revision"
    );
    let ttl = c.ttl(LEASE, true).await;
    Expiry {
        deletes,
        remaining: c.keys("exp/").await,
        time_to_live: (ttl.ttl, ttl.granted_ttl),
        keep_alive_ttl: c.keep_alive_once(LEASE).await,
        listed: c.leases().await.contains(&LEASE),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_every_attached_key_in_one_revision_and_one_watch_response() {
    let (f, e) = on_both!(expiry);
    for (who, x) in [("ferrocd", Some(&f)), ("etcd", e.as_ref())] {
        let Some(x) = x else { continue };
        assert_eq!(x.remaining, [("exp/plain".to_string(), 0)], "{who}");
        assert_eq!(
            x.time_to_live,
            (-1, 0),
            "{who}: TimeToLive of an expired lease"
        );
        assert_eq!(x.keep_alive_ttl, 0, "{who}: keep-alive of an expired lease");
        assert!(!x.listed, "{who}: an expired lease is not listed");
    }
    if let Some(e) = e {
        assert_eq!(f, e, "left: ferrocd, right: etcd");
    }
}

// ---------------------------------------------------------------- keep-alive

/// (key still there after keep-alives, remaining TTL then, key present 1.2 s
/// after the last keep-alive, seconds until it vanished after the last).
async fn keep_alive(server: &Server) -> (bool, i64, bool, Duration) {
    let who = name(server);
    let mut c = Conn::new(server).await;
    let mut client = server.client().await;
    let id = c.grant_ok(2, 0).await.id;
    c.put("ka/k", "v", id).await;
    let (mut keeper, mut stream) = client.lease_keep_alive(id).await.expect("keep alive");
    let start = Instant::now();
    // Five seconds: two and a half TTLs.
    while start.elapsed() < Duration::from_secs(5) {
        keeper.keep_alive().await.expect("send keep-alive");
        let r = tokio::time::timeout(Duration::from_secs(3), stream.message())
            .await
            .unwrap_or_else(|_| panic!("{who}: keep-alive not answered in 3 s"))
            .expect("keep-alive stream")
            .expect("keep-alive response");
        assert_eq!((r.id(), r.ttl()), (id, 2), "{who}: keep-alive answer");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    keeper.keep_alive().await.expect("send keep-alive");
    stream
        .message()
        .await
        .expect("keep-alive stream")
        .expect("keep-alive response");
    let last = Instant::now();
    let alive = c.get("ka/k").await.is_some();
    let remaining = c.ttl(id, false).await.ttl;
    drop((keeper, stream));
    tokio::time::sleep_until((last + Duration::from_millis(1200)).into()).await;
    let still = c.get("ka/k").await.is_some();
    let gone = wait_gone(&mut c, "ka/k", Duration::from_secs(6))
        .await
        .unwrap_or_else(|| panic!("{who}: the key outlived its lease by 6 s"));
    (alive, remaining, still, gone - last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_stream_keeps_a_lease_alive_past_its_ttl() {
    let (f, e) = on_both!(keep_alive);
    for (who, x) in [("ferrocd", Some(f)), ("etcd", e)] {
        let Some((alive, remaining, still, gone_after)) = x else {
            continue;
        };
        assert!(alive, "{who}: key gone although kept alive for 5 s");
        assert!(
            (1..=2).contains(&remaining),
            "{who}: remaining {remaining} right after a keep-alive"
        );
        assert!(still, "{who}: key gone 1.2 s after the last keep-alive");
        assert!(
            gone_after <= Duration::from_millis(4000),
            "{who}: key vanished {gone_after:?} after the last keep-alive of a 2 s lease"
        );
    }
}

// ---------------------------------------------------------------- time to live

#[derive(Debug, PartialEq)]
struct TimeToLive {
    granted: i64,
    keys_without_flag: usize,
    /// The attached keys after each step.
    keys: Vec<Vec<String>>,
}

async fn time_to_live(server: &Server) -> TimeToLive {
    let who = name(server);
    let mut c = Conn::new(server).await;
    const A: i64 = 0x7101;
    const B: i64 = 0x7102;
    c.grant_ok(10, A).await;
    let granted_at = Instant::now();
    c.grant_ok(30, B).await;
    c.put("ttl/b", "1", A).await;
    c.put("ttl/a", "1", A).await;
    c.put("ttl/c", "1", 0).await;
    let r = c.ttl(A, true).await;
    assert_eq!(r.id, A, "{who}");
    assert!(
        (9..=10).contains(&r.ttl),
        "{who}: remaining {} of a fresh 10 s lease",
        r.ttl
    );
    let mut keys = vec![c.lease_keys(A).await];
    let without = c.ttl(A, false).await;
    assert_eq!(without.granted_ttl, 10, "{who}");
    // Remaining counts down (whole seconds, rounded down).
    tokio::time::sleep_until((granted_at + Duration::from_millis(1100)).into()).await;
    let later = c.ttl(A, false).await.ttl;
    assert!(
        (7..=8).contains(&later),
        "{who}: remaining {later} 1.1 s into a 10 s lease"
    );
    // A put without a lease detaches the key.
    c.put("ttl/a", "2", 0).await;
    keys.push(c.lease_keys(A).await);
    // A put with a lease attaches a key that had none.
    c.put("ttl/c", "2", A).await;
    keys.push(c.lease_keys(A).await);
    // A put with another lease moves the key.
    c.put("ttl/b", "2", B).await;
    keys.push(c.lease_keys(A).await);
    keys.push(c.lease_keys(B).await);
    // ignore_lease keeps the key's lease.
    c.put_req(PutRequest {
        key: "ttl/b".into(),
        value: "3".into(),
        ignore_lease: true,
        ..Default::default()
    })
    .await
    .expect("put ignore_lease");
    keys.push(c.lease_keys(B).await);
    // A delete detaches.
    c.kv.delete_range(DeleteRangeRequest {
        key: "ttl/c".into(),
        ..Default::default()
    })
    .await
    .expect("delete");
    keys.push(c.lease_keys(A).await);
    // A txn attaches too.
    c.kv.txn(TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put_op("ttl/d", "1", A))),
        }],
        ..Default::default()
    })
    .await
    .expect("txn");
    keys.push(c.lease_keys(A).await);
    TimeToLive {
        granted: r.granted_ttl,
        keys_without_flag: without.keys.len(),
        keys,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_reports_remaining_granted_and_attached_keys() {
    let (f, e) = on_both!(time_to_live);
    let expected: Vec<Vec<&str>> = vec![
        vec!["ttl/a", "ttl/b"],
        vec!["ttl/b"],
        vec!["ttl/b", "ttl/c"],
        vec!["ttl/c"],
        vec!["ttl/b"],
        vec!["ttl/b"],
        vec![],
        vec!["ttl/d"],
    ];
    assert_eq!(f.granted, 10);
    assert_eq!(f.keys_without_flag, 0, "keys only when asked");
    assert_eq!(f.keys, expected, "ferrocd");
    if let Some(e) = e {
        assert_eq!(f, e, "left: ferrocd, right: etcd");
    }
}

// ---------------------------------------------------------------- leases

async fn leases(server: &Server) -> (Vec<i64>, Vec<i64>, usize) {
    let mut c = Conn::new(server).await;
    let empty = c.leases().await;
    for id in [0x7203, 0x7201, 0x7202] {
        c.grant_ok(60, id).await;
    }
    let generated = c.grant_ok(60, 0).await.id;
    c.revoke(0x7202).await.expect("revoke");
    let mut listed = c.leases().await;
    assert!(listed.contains(&generated), "{}: {listed:?}", c.name);
    listed.retain(|id| *id != generated);
    (empty, listed, c.leases().await.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_lists_every_live_lease() {
    let (f, e) = on_both!(leases);
    assert_eq!(f, (vec![], vec![0x7201, 0x7203], 3));
    if let Some(e) = e {
        assert_eq!(f, e, "left: ferrocd, right: etcd");
    }
}

// ---------------------------------------------------------------- errors

#[derive(Debug, PartialEq)]
struct Errors {
    revoke_unknown: Result<i64, Failure>,
    revoke_zero: Result<i64, Failure>,
    duplicate: Result<i64, Failure>,
    too_large: Result<i64, Failure>,
    largest: Result<i64, Failure>,
    below_minimum: Vec<Result<i64, Failure>>,
    negative_id: Result<(i64, i64), Failure>,
    put_unknown: Result<i64, Failure>,
    txn_put_unknown: Result<bool, Failure>,
    keep_alive_unknown: i64,
    time_to_live_unknown: (i64, i64, i64),
    /// Revision changes of: grant, revoke of a lease without keys.
    revision_deltas: (i64, i64),
}

async fn errors(server: &Server) -> Errors {
    let mut c = Conn::new(server).await;
    let ttl = |r: Result<LeaseGrantResponse, Failure>| r.map(|g| g.ttl);
    c.put("e/k", "v", 0).await;
    let revoke_unknown = c.revoke(0x12345).await;
    let revoke_zero = c.revoke(0).await;
    let rev = c.rev().await;
    c.grant_ok(10, 0x7301).await;
    let after_grant = c.rev().await;
    let duplicate = ttl(c.grant(10, 0x7301).await);
    let too_large = ttl(c.grant(9_000_000_001, 0x7302).await);
    let largest = ttl(c.grant(9_000_000_000, 0x7303).await);
    let mut below_minimum = Vec::new();
    for (ttl_asked, id) in [(1, 0x7304), (0, 0x7305), (-10, 0x7306)] {
        below_minimum.push(ttl(c.grant(ttl_asked, id).await));
    }
    let negative_id = c.grant(10, -0x7307).await.map(|g| (g.id, g.ttl));
    let put_unknown = c.put_req(put_op("e/k", "v2", 0x12345)).await;
    let txn_put_unknown =
        c.kv.txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(put_op(
                    "e/k", "v3", 0x12345,
                ))),
            }],
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().succeeded)
        .map_err(failure);
    let before_revoke = c.rev().await;
    c.revoke(0x7301).await.expect("revoke");
    let after_revoke = c.rev().await;
    let t = c.ttl(0x12345, true).await;
    Errors {
        revoke_unknown,
        revoke_zero,
        duplicate,
        too_large,
        largest,
        below_minimum,
        negative_id,
        put_unknown,
        txn_put_unknown,
        keep_alive_unknown: c.keep_alive_once(0x12345).await,
        time_to_live_unknown: (t.ttl, t.granted_ttl, t.keys.len() as i64),
        revision_deltas: (after_grant - rev, after_revoke - before_revoke),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_match_etcd() {
    let (f, e) = on_both!(errors);
    let not_found = Err((
        Code::NotFound,
        "etcdserver: requested lease not found".to_string(),
    ));
    assert_eq!(f.revoke_unknown, not_found);
    assert_eq!(
        f.duplicate,
        Err((
            Code::FailedPrecondition,
            "etcdserver: lease already exists".to_string()
        ))
    );
    assert_eq!(
        f.too_large,
        Err((
            Code::OutOfRange,
            "etcdserver: too large lease TTL".to_string()
        ))
    );
    assert_eq!(f.largest, Ok(9_000_000_000));
    assert_eq!(f.put_unknown, not_found);
    assert_eq!(f.keep_alive_unknown, 0);
    assert_eq!(f.time_to_live_unknown, (-1, 0, 0));
    if let Some(e) = e {
        assert_eq!(f, e, "left: ferrocd, right: etcd");
    }
}

// ---------------------------------------------------------------- detach

async fn detach(server: &Server) -> (Option<KeyValue>, Vec<String>) {
    let who = name(server);
    let mut c = Conn::new(server).await;
    const LEASE: i64 = 0x7401;
    c.grant_ok(2, LEASE).await;
    c.put("d/kept", "1", LEASE).await;
    c.put("d/gone", "1", LEASE).await;
    c.put("d/kept", "2", 0).await;
    wait_gone(&mut c, "d/gone", Duration::from_secs(6))
        .await
        .unwrap_or_else(|| panic!("{who}: d/gone outlived its 2 s lease by 4 s"));
    let mut kept = c.get("d/kept").await;
    if let Some(kv) = kept.as_mut() {
        assert_eq!(kv.lease, 0, "{who}: d/kept has no lease");
    }
    let keys = c.keys("d/").await.into_iter().map(|(k, _)| k).collect();
    (kept, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_without_lease_detaches_the_key_from_its_lease() {
    let (f, e) = on_both!(detach);
    assert_eq!(f.1, ["d/kept"], "ferrocd: only the detached key survives");
    let kv = f.0.as_ref().expect("ferrocd: d/kept survives the lease");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"2"[..], 2));
    if let Some(e) = e {
        assert_eq!(f, e, "left: ferrocd, right: etcd");
    }
}

// ---------------------------------------------------------------- revoke

#[derive(Debug, PartialEq)]
struct Revoke {
    revoke_revision: i64,
    deletes: EventSummary,
    remaining: Vec<(String, i64)>,
    keep_alive_ttl: i64,
    twice: Result<i64, Failure>,
}

async fn revoke(server: &Server) -> Revoke {
    let who = name(server);
    let mut c = Conn::new(server).await;
    const LEASE: i64 = 0x7501;
    c.grant_ok(60, LEASE).await;
    c.put("r/z", "1", LEASE).await;
    c.put("r/x", "1", LEASE).await;
    c.put("r/w", "1", 0).await;
    // Attached in a txn.
    c.kv.txn(TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put_op("r/y", "1", LEASE))),
        }],
        ..Default::default()
    })
    .await
    .expect("txn");
    let before = c.rev().await;
    let mut w = c.watch_prefix("r/", 0, true).await;
    let revoke_revision = c.revoke(LEASE).await.expect("revoke");
    assert_eq!(revoke_revision, before + 1, "{who}: revoke is one revision");
    let r = w
        .next_events(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("{who}: no delete events after revoke"));
    let deletes = summarize(&r);
    assert_eq!(
        deletes.0.len(),
        3,
        "{who}: all in one response: {deletes:?}"
    );
    if let Some(extra) = w.next_events(Duration::from_millis(300)).await {
        panic!("{who}: unexpected events after the revoke: {extra:?}");
    }
    Revoke {
        revoke_revision,
        deletes,
        remaining: c.keys("r/").await,
        keep_alive_ttl: c.keep_alive_once(LEASE).await,
        twice: c.revoke(LEASE).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_attached_keys_in_one_revision() {
    let (f, e) = on_both!(revoke);
    let rev = f.revoke_revision;
    let prev = Some(("1".to_string(), 0x7501));
    let del = EventType::Delete as i32;
    assert_eq!(
        f.deletes,
        (
            vec![
                ("r/x".to_string(), del, rev, prev.clone()),
                ("r/y".to_string(), del, rev, prev.clone()),
                ("r/z".to_string(), del, rev, prev),
            ],
            rev
        )
    );
    assert_eq!(f.remaining, [("r/w".to_string(), 0)]);
    assert_eq!(f.keep_alive_ttl, 0);
    assert_eq!(
        f.twice,
        Err((
            Code::NotFound,
            "etcdserver: requested lease not found".to_string()
        ))
    );
    if let Some(e) = e {
        assert_eq!(f, e, "left: ferrocd, right: etcd");
    }
}

// ---------------------------------------------------------------- restart

/// (keys 3 s after the restart, TimeToLive then, the vanishing time
/// measured from the restart).
async fn restart(server: &mut Server) -> (Vec<(String, i64)>, LeaseTimeToLiveResponse, Duration) {
    let who = name(server);
    const LEASE: i64 = 0x7601;
    {
        let mut c = Conn::new(server).await;
        c.grant_ok(6, LEASE).await;
        c.put("rs/a", "1", LEASE).await;
        c.put("rs/b", "1", LEASE).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.kill9();
    server.restart().await;
    let restarted = Instant::now();
    let mut c = Conn::new(server).await;
    // Two seconds of the original TTL were left; a restart gives a full one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let keys = c.keys("rs/").await;
    let ttl = c.ttl(LEASE, true).await;
    let gone = wait_gone(&mut c, "rs/a", Duration::from_secs(7))
        .await
        .unwrap_or_else(|| panic!("{who}: keys of a 6 s lease still there 10 s after restart"));
    assert!(
        c.keys("rs/").await.is_empty(),
        "{who}: every key of the lease is gone"
    );
    (keys, ttl, gone - restarted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_gives_leases_a_full_ttl_instead_of_expiring_them_early() {
    let (mut ferrocd, etcd) = tokio::join!(Server::ferrocd(&[]), Server::etcd(&[]));
    let etcd_run = async {
        match etcd {
            Some(mut e) => Some(restart(&mut e).await),
            None => None,
        }
    };
    let (f, e) = tokio::join!(restart(&mut ferrocd), etcd_run);
    eprintln!("ferrocd: {f:?}\netcd:    {e:?}");
    for (who, x) in [("ferrocd", Some(f)), ("etcd", e)] {
        let Some((keys, ttl, gone)) = x else { continue };
        assert_eq!(
            keys,
            [("rs/a".to_string(), 0x7601), ("rs/b".to_string(), 0x7601)],
            "{who}: keys 3 s after restart (7 s after the grant of a 6 s lease)"
        );
        assert_eq!(ttl.granted_ttl, 6, "{who}");
        assert!(
            (1..=4).contains(&ttl.ttl),
            "{who}: remaining {} 3 s after restart",
            ttl.ttl
        );
        assert!(
            gone >= Duration::from_millis(3500) && gone <= Duration::from_secs(9),
            "{who}: keys vanished {gone:?} after the restart"
        );
    }
}

// ---------------------------------------------------------------- late keep-alive

/// (TTL answered to a keep-alive sent after the TTL ran out, whether the key
/// is there right after that answer, and 1.5 s later).
async fn late_keep_alive(server: &Server) -> (i64, bool, bool) {
    let mut c = Conn::new(server).await;
    const LEASE: i64 = 0x7701;
    c.grant_ok(2, LEASE).await;
    let granted = Instant::now();
    c.put("late/k", "1", LEASE).await;
    // The server's deadline is at most `granted + 2 s`; the expiry may not
    // have been applied yet (etcd and ferrocd look every 500 ms).
    tokio::time::sleep_until((granted + Duration::from_millis(2100)).into()).await;
    let ttl = c.keep_alive_once(LEASE).await;
    let right_after = c.get("late/k").await.is_some();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (ttl, right_after, c.get("late/k").await.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_after_the_ttl_ran_out_does_not_revive_the_lease() {
    let (f, e) = on_both!(late_keep_alive);
    // etcd answers such a keep-alive only once the lease is revoked.
    assert_eq!(
        f,
        (0, false, false),
        "ferrocd: (keep-alive TTL, key there right after, key there 1.5 s later)"
    );
    if let Some(e) = e {
        assert_eq!(f, e, "left: ferrocd, right: etcd");
    }
}
