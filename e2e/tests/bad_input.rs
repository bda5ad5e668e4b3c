//! Bad requests over raw gRPC, and bad flags on the command line: ferrocd
//! answers with etcd's exact (code, message), never hangs or dies, and keeps
//! serving afterwards.

use std::fmt::Debug;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocd_e2e::{ferrocd_bin, free_port, Server};
use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    AuthStatusRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest, WatchCreateRequest,
    WatchRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Kv = KvClient<Channel>;

/// A KV client that sends and receives large messages.
async fn kv(url: &str) -> Kv {
    KvClient::connect(url.to_string())
        .await
        .expect("connect")
        .max_encoding_message_size(16 << 20)
        .max_decoding_message_size(16 << 20)
}

/// Awaits `call` (at most 10 s: a hang is a failure) and requires it to
/// fail with exactly `code` and `message`.
async fn refused<T: Debug>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    code: Code,
    message: &str,
) {
    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the server did not answer within 10 s")
        .expect_err("the request was accepted");
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "unexpected status {status:?}"
    );
}

fn put(key: &str, value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(put(key, b"v"))),
    }
}

fn txn_of_puts(n: usize) -> TxnRequest {
    TxnRequest {
        success: (0..n).map(|i| put_op(&format!("txn/{i:03}"))).collect(),
        ..Default::default()
    }
}

/// The current revision, read through the server.
async fn current_revision(kv: &mut Kv) -> i64 {
    let resp = kv.range(get("anything")).await.expect("range").into_inner();
    resp.header.expect("header").revision
}

/// Puts and reads back a value: the server still works.
async fn still_serves(kv: &mut Kv) {
    let before = current_revision(kv).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), kv.put(put("alive", b"yes")))
        .await
        .expect("put hangs")
        .expect("put fails")
        .into_inner();
    assert_eq!(resp.header.unwrap().revision, before + 1);
    let got = kv.range(get("alive")).await.expect("range").into_inner();
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(got.kvs[0].value, b"yes");
    assert_eq!(got.kvs[0].mod_revision, before + 1);
}

// ---------------------------------------------------------------- checks

async fn empty_key_is_refused(kv: &mut Kv) {
    let msg = "etcdserver: key is not provided";
    refused(kv.range(get("")), Code::InvalidArgument, msg).await;
    refused(kv.put(put("", b"v")), Code::InvalidArgument, msg).await;
    refused(
        kv.delete_range(DeleteRangeRequest::default()),
        Code::InvalidArgument,
        msg,
    )
    .await;
    let txn = TxnRequest {
        success: vec![put_op("")],
        ..Default::default()
    };
    refused(kv.txn(txn), Code::InvalidArgument, msg).await;
}

async fn oversized_value_is_too_large(kv: &mut Kv) {
    let before = current_revision(kv).await;
    // 1.6 MiB: over --max-request-bytes (1.5 MiB), under the gRPC limit.
    let value = vec![b'x'; 1677 * 1024];
    refused(
        kv.put(put("big", &value)),
        Code::InvalidArgument,
        "etcdserver: request is too large",
    )
    .await;
    assert_eq!(current_revision(kv).await, before, "nothing was written");
    assert!(kv
        .range(get("big"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
    // Just under the limit is fine.
    let fits = vec![b'y'; 1024 * 1024 + 256 * 1024];
    kv.put(put("fits", &fits))
        .await
        .expect("a 1.25 MiB value fits");
    let got = kv.range(get("fits")).await.unwrap().into_inner();
    assert_eq!(got.kvs[0].value.len(), fits.len());
}

async fn value_beyond_grpc_limit_is_rejected(kv: &mut Kv) {
    let value = vec![b'z'; 3 << 20];
    let status = tokio::time::timeout(Duration::from_secs(10), kv.put(put("huge", &value)))
        .await
        .expect("the server did not answer within 10 s")
        .expect_err("a 3 MiB request was accepted");
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "unexpected status {status:?}"
    );
    assert!(kv
        .range(get("huge"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
}

async fn txn_limits_are_enforced(kv: &mut Kv) {
    refused(
        kv.txn(txn_of_puts(129)),
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )
    .await;
    // Compares count too.
    let compares = TxnRequest {
        compare: (0..129)
            .map(|i| ferrocd_proto::etcdserverpb::Compare {
                key: format!("c/{i}").into_bytes(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    refused(
        kv.txn(compares),
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )
    .await;
    // Exactly the limit is fine: 128 keys written in one revision.
    let before = current_revision(kv).await;
    let resp = kv
        .txn(txn_of_puts(128))
        .await
        .expect("128 ops")
        .into_inner();
    assert!(resp.succeeded);
    assert_eq!(resp.responses.len(), 128);
    assert_eq!(resp.header.unwrap().revision, before + 1);

    let dup = TxnRequest {
        success: vec![put_op("same"), put_op("other"), put_op("same")],
        ..Default::default()
    };
    refused(
        kv.txn(dup),
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    )
    .await;
    assert!(kv
        .range(get("same"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
}

async fn revisions_out_of_range_are_refused(kv: &mut Kv) {
    for v in [b"1", b"2", b"3"] {
        kv.put(put("r", v)).await.unwrap();
    }
    let now = current_revision(kv).await;
    let at = |revision| RangeRequest {
        revision,
        ..get("r")
    };
    refused(
        kv.range(at(now + 1)),
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    )
    .await;
    kv.compact(CompactionRequest {
        revision: now - 1,
        physical: true,
    })
    .await
    .expect("compact");
    refused(
        kv.range(at(now - 2)),
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    )
    .await;
    let at_compacted = kv
        .range(at(now - 1))
        .await
        .expect("at the compacted revision")
        .into_inner();
    assert_eq!(at_compacted.kvs[0].value, b"2");
}

async fn bad_sort_is_refused(kv: &mut Kv) {
    let bad_sort = RangeRequest {
        sort_order: 7,
        ..get("k")
    };
    refused(
        kv.range(bad_sort),
        Code::InvalidArgument,
        "etcdserver: invalid sort option",
    )
    .await;
    let bad_target = RangeRequest {
        sort_order: 1,
        sort_target: 9,
        ..get("k")
    };
    refused(
        kv.range(bad_target),
        Code::InvalidArgument,
        "etcdserver: invalid sort option",
    )
    .await;
}

async fn bad_put_options_are_refused(kv: &mut Kv) {
    let ignore_value = PutRequest {
        ignore_value: true,
        ..put("k", b"but a value")
    };
    refused(
        kv.put(ignore_value),
        Code::InvalidArgument,
        "etcdserver: value is provided",
    )
    .await;
    let ignore_lease = PutRequest {
        ignore_lease: true,
        lease: 42,
        ..put("k", b"v")
    };
    refused(
        kv.put(ignore_lease),
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    )
    .await;
    let lease = PutRequest {
        lease: 42,
        ..put("k", b"v")
    };
    refused(
        kv.put(lease),
        Code::NotFound,
        "etcdserver: requested lease not found",
    )
    .await;
    assert!(kv
        .range(get("k"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
}

/// Awaits an RPC of a service that is not built yet, or is being built:
/// it must answer within 10 s, and an error must be `Unimplemented` with a
/// message or, once the service exists, etcd's answer (`allowed`). Returns
/// the response when the service answered for real.
async fn unbuilt_or_etcd<T: Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    allowed: &[(Code, &str)],
) -> Option<T> {
    let answer = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hangs"));
    match answer {
        Ok(resp) => Some(resp.into_inner()),
        Err(status) if status.code() == Code::Unimplemented => {
            assert!(!status.message().is_empty(), "{what}: no message");
            None
        }
        Err(status) => {
            assert!(
                allowed.contains(&(status.code(), status.message())),
                "{what}: {status:?}"
            );
            None
        }
    }
}

/// The first message of a server stream of a service that may not be built
/// yet: `None` when it answered `Unimplemented` (at once or as the stream's
/// first item), never a hang.
async fn first_message<M: Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, Status>>,
) -> Option<M> {
    let mut stream = unbuilt_or_etcd(what, call, &[]).await?;
    let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap_or_else(|_| panic!("{what}: no message in 10 s"));
    match item {
        Ok(Some(m)) => Some(m),
        Ok(None) => panic!("{what}: the stream ended without a message"),
        Err(status) => {
            assert_eq!(status.code(), Code::Unimplemented, "{what}: {status:?}");
            None
        }
    }
}

/// Watch, Lease and Auth: `Unimplemented` while they are not built, and
/// etcd's answers once they are; never a hang or a dead server.
async fn unbuilt_services_answer_promptly(url: &str) {
    let lease_not_found = [(Code::NotFound, "etcdserver: requested lease not found")];
    let mut lease = LeaseClient::connect(url.to_string()).await.unwrap();
    let grant = LeaseGrantRequest { ttl: 10, id: 0 };
    if let Some(g) = unbuilt_or_etcd("LeaseGrant", lease.lease_grant(grant), &[]).await {
        assert_ne!(g.id, 0);
        assert_eq!(g.ttl, 10);
    }
    let revoke = LeaseRevokeRequest { id: 1 };
    let revoked =
        unbuilt_or_etcd("LeaseRevoke", lease.lease_revoke(revoke), &lease_not_found).await;
    assert!(
        revoked.is_none(),
        "revoked lease 1, which was never granted"
    );
    let ttl = LeaseTimeToLiveRequest { id: 1, keys: true };
    if let Some(t) = unbuilt_or_etcd("LeaseTimeToLive", lease.lease_time_to_live(ttl), &[]).await {
        assert_eq!(t.ttl, -1, "lease 1 does not exist");
    }
    unbuilt_or_etcd(
        "LeaseLeases",
        lease.lease_leases(LeaseLeasesRequest {}),
        &[],
    )
    .await;
    let keep_alive = futures::stream::iter([LeaseKeepAliveRequest { id: 1 }]);
    if let Some(k) = first_message("LeaseKeepAlive", lease.lease_keep_alive(keep_alive)).await {
        assert_eq!(k.ttl, 0, "lease 1 does not exist");
    }

    let mut watch = WatchClient::connect(url.to_string()).await.unwrap();
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })),
    };
    // An open request stream: the answer must not wait for it to end.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.unwrap();
    if let Some(w) = first_message("Watch", watch.watch(tokio_stream_from(rx))).await {
        assert!(
            w.created,
            "the first watch response confirms the watch: {w:?}"
        );
    }
    drop(tx);

    let mut auth = AuthClient::connect(url.to_string()).await.unwrap();
    if let Some(a) =
        unbuilt_or_etcd("AuthStatus", auth.auth_status(AuthStatusRequest {}), &[]).await
    {
        assert!(!a.enabled);
    }
}

/// An mpsc receiver as a stream (without a tokio-stream dependency).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn empty_key_is_invalid_argument() {
    let server = Server::ferrocd(&[]).await;
    let mut kv = kv(&server.client_url).await;
    empty_key_is_refused(&mut kv).await;
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn value_over_max_request_bytes_is_request_too_large() {
    let server = Server::ferrocd(&[]).await;
    let mut kv = kv(&server.client_url).await;
    oversized_value_is_too_large(&mut kv).await;
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn value_over_grpc_limit_is_rejected_and_server_survives() {
    let server = Server::ferrocd(&[]).await;
    let mut kv = kv(&server.client_url).await;
    value_beyond_grpc_limit_is_rejected(&mut kv).await;
    still_serves(&mut kv).await;
    // A fresh connection works too.
    let mut fresh = self::kv(&server.client_url).await;
    still_serves(&mut fresh).await;
}

#[tokio::test]
async fn txn_with_too_many_ops_or_duplicate_keys_is_invalid_argument() {
    let server = Server::ferrocd(&[]).await;
    let mut kv = kv(&server.client_url).await;
    txn_limits_are_enforced(&mut kv).await;
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn future_and_compacted_revisions_are_out_of_range() {
    let server = Server::ferrocd(&[]).await;
    let mut kv = kv(&server.client_url).await;
    revisions_out_of_range_are_refused(&mut kv).await;
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn bad_sort_ignore_value_and_unknown_lease_are_refused() {
    let server = Server::ferrocd(&[]).await;
    let mut kv = kv(&server.client_url).await;
    bad_sort_is_refused(&mut kv).await;
    bad_put_options_are_refused(&mut kv).await;
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn watch_lease_and_auth_answer_unimplemented_or_etcd_answers_promptly() {
    let server = Server::ferrocd(&[]).await;
    unbuilt_services_answer_promptly(&server.client_url).await;
    let mut kv = kv(&server.client_url).await;
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn server_keeps_serving_after_every_kind_of_bad_input() {
    let server = Server::ferrocd(&[]).await;
    let mut kv = kv(&server.client_url).await;
    empty_key_is_refused(&mut kv).await;
    oversized_value_is_too_large(&mut kv).await;
    value_beyond_grpc_limit_is_rejected(&mut kv).await;
    txn_limits_are_enforced(&mut kv).await;
    revisions_out_of_range_are_refused(&mut kv).await;
    bad_sort_is_refused(&mut kv).await;
    bad_put_options_are_refused(&mut kv).await;
    unbuilt_services_answer_promptly(&server.client_url).await;
    still_serves(&mut kv).await;
    let mut m = MaintenanceClient::connect(server.client_url.clone())
        .await
        .unwrap();
    let status = m.status(StatusRequest {}).await.unwrap().into_inner();
    assert_ne!(status.leader, 0);
    assert!(
        server.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn max_txn_ops_flag_limits_txn_size() {
    let server = Server::ferrocd(&["--max-txn-ops=3"]).await;
    let mut kv = kv(&server.client_url).await;
    refused(
        kv.txn(txn_of_puts(4)),
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )
    .await;
    let resp = kv.txn(txn_of_puts(3)).await.expect("3 ops").into_inner();
    assert_eq!(resp.responses.len(), 3);
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn max_request_bytes_flag_limits_request_size() {
    let server = Server::ferrocd(&["--max-request-bytes=1024"]).await;
    let mut kv = kv(&server.client_url).await;
    refused(
        kv.put(put("k", &[b'x'; 2048])),
        Code::InvalidArgument,
        "etcdserver: request is too large",
    )
    .await;
    kv.put(put("k", &[b'x'; 512]))
        .await
        .expect("a 512-byte value fits");
    still_serves(&mut kv).await;
}

// ---------------------------------------------------------------- flags

/// A ferrocd process started by hand (the harness passes no environment).
struct Process {
    child: Child,
    client_url: String,
    dir: tempfile::TempDir,
}

impl Process {
    /// What the process wrote to stdout and stderr.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flags for a private data dir and free ports, plus `extra`.
fn flags(dir: &Path, extra: &[&str]) -> (Vec<String>, String) {
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut args = vec![
        "--name=default".to_string(),
        format!("--data-dir={}", dir.join("data").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (args, client_url)
}

fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let (args, client_url) = flags(dir.path(), extra);
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(ferrocd_bin())
        .args(&args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start ferrocd");
    Process {
        child,
        client_url,
        dir,
    }
}

/// Runs ferrocd with bad flags: it must exit by itself, quickly. Returns
/// the exit status and what it printed.
fn run_to_exit(extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut p = spawn(extra, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            return (status, p.log());
        }
        assert!(
            Instant::now() < deadline,
            "ferrocd {extra:?} kept running: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a hand-started ferrocd serves KV requests.
async fn wait_serving(p: &mut Process) -> Kv {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("ferrocd exited with {status}: {}", p.log());
        }
        if let Ok(mut c) = KvClient::connect(p.client_url.clone()).await {
            if c.range(get("ready")).await.is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "ferrocd not serving in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn unknown_flag_exits_non_zero_naming_it() {
    let (status, stderr) = run_to_exit(&["--no-such-flag=1"]);
    assert!(!status.success());
    assert!(status.code().is_some(), "killed by a signal: {status}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn malformed_flag_value_exits_non_zero() {
    let (status, stderr) = run_to_exit(&["--max-txn-ops=abc"]);
    assert!(!status.success());
    assert!(status.code().is_some(), "killed by a signal: {status}");
    assert!(stderr.contains("max-txn-ops"), "{stderr}");
    assert!(stderr.contains("abc"), "{stderr}");
    let (status, stderr) = run_to_exit(&["--max-txn-ops=0"]);
    assert!(!status.success());
    assert!(stderr.contains("max-txn-ops"), "{stderr}");
}

#[tokio::test]
async fn etcd_max_txn_ops_from_the_environment_is_honoured() {
    let mut p = spawn(&[], &[("ETCD_MAX_TXN_OPS", "3")]);
    let mut kv = wait_serving(&mut p).await;
    refused(
        kv.txn(txn_of_puts(4)),
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )
    .await;
    let resp = kv.txn(txn_of_puts(3)).await.expect("3 ops").into_inner();
    assert_eq!(resp.responses.len(), 3);
    still_serves(&mut kv).await;
}

#[tokio::test]
async fn command_line_flag_wins_over_the_environment() {
    let mut p = spawn(&["--max-txn-ops=5"], &[("ETCD_MAX_TXN_OPS", "3")]);
    let mut kv = wait_serving(&mut p).await;
    kv.txn(txn_of_puts(5)).await.expect("5 ops: the flag wins");
    refused(
        kv.txn(txn_of_puts(6)),
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )
    .await;
}

/// The expectations above are etcd's: etcd 3.4 refuses the same requests
/// with the same (code, message). Not the sort checks: etcd 3.4 accepts an
/// unknown sort order (the check arrived in 3.5) and its member dies on an
/// unknown sort target.
#[tokio::test]
async fn etcd_refuses_the_same_bad_input() {
    let Some(server) = Server::etcd(&[]).await else {
        return;
    };
    let mut kv = kv(&server.client_url).await;
    empty_key_is_refused(&mut kv).await;
    oversized_value_is_too_large(&mut kv).await;
    value_beyond_grpc_limit_is_rejected(&mut kv).await;
    txn_limits_are_enforced(&mut kv).await;
    revisions_out_of_range_are_refused(&mut kv).await;
    bad_put_options_are_refused(&mut kv).await;
    still_serves(&mut kv).await;
}
