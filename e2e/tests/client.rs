//! The `etcd-client` crate (a third-party Rust etcd client) against ferrocd:
//! KV with options, kube-apiserver's txn shapes, compaction, and the
//! Maintenance and Cluster calls clients use to inspect a server.

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, Error, GetOptions, KeyValue,
    PutOptions, ResponseHeader, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use ferrocd_e2e::Server;

async fn start() -> (Server, Client) {
    let server = Server::ferrocd(&[]).await;
    let client = server.client().await;
    (server, client)
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter()
        .map(|kv| kv.key_str().expect("utf-8 key"))
        .collect()
}

fn values(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter()
        .map(|kv| kv.value_str().expect("utf-8 value"))
        .collect()
}

/// The gRPC status of a failed call.
fn status(e: Error) -> tonic::Status {
    match e {
        Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn revision(header: Option<&ResponseHeader>) -> i64 {
    header.expect("response header").revision()
}

#[tokio::test]
async fn put_get_delete_track_revisions_and_versions() {
    let (_server, mut c) = start().await;
    let put = c.put("k", "v1", None).await.unwrap();
    assert_eq!(revision(put.header()), 2);
    assert!(put.prev_key().is_none());
    c.put("k", "v2", None).await.unwrap();
    let get = c.get("k", None).await.unwrap();
    assert_eq!(revision(get.header()), 3);
    assert_eq!(get.count(), 1);
    assert!(!get.more());
    let kv = &get.kvs()[0];
    assert_eq!((kv.key(), kv.value()), (&b"k"[..], &b"v2"[..]));
    assert_eq!(
        (
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease()
        ),
        (2, 3, 2, 0)
    );
    let del = c.delete("k", None).await.unwrap();
    assert_eq!(del.deleted(), 1);
    assert_eq!(revision(del.header()), 4);
    assert!(del.prev_kvs().is_empty());
    let get = c.get("k", None).await.unwrap();
    assert_eq!(get.count(), 0);
    assert!(get.kvs().is_empty());
    // Deleting nothing does not make a revision.
    let del = c.delete("k", None).await.unwrap();
    assert_eq!((del.deleted(), revision(del.header())), (0, 4));
    // A new generation: version and create revision start over.
    c.put("k", "v3", None).await.unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (5, 5, 1)
    );
}

#[tokio::test]
async fn put_with_prev_key_returns_the_previous_value() {
    let (_server, mut c) = start().await;
    let put = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert!(put.prev_key().is_none(), "no previous value yet");
    let put = c
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    let prev = put.prev_key().expect("prev kv");
    assert_eq!((prev.key(), prev.value()), (&b"k"[..], &b"v1"[..]));
    assert_eq!((prev.mod_revision(), prev.version()), (2, 1));
    // Without the option the previous value is not returned.
    let put = c.put("k", "v3", None).await.unwrap();
    assert!(put.prev_key().is_none());
    // ignore_value keeps the value, bumps the version.
    c.put("k", "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.version()), (&b"v3"[..], 4));
    let err = status(
        c.put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: key not found");
}

async fn fixture(c: &mut Client) {
    // Revisions 2..=7; "b" is updated last, "c" has version 2.
    for (k, v) in [
        ("a", "3"),
        ("b", "1"),
        ("c", "2"),
        ("c", "9"),
        ("d", "5"),
        ("b", "0"),
    ] {
        c.put(format!("p/{k}"), v, None).await.unwrap();
    }
    c.put("q", "outside", None).await.unwrap();
}

#[tokio::test]
async fn get_options_prefix_limit_sort_revision_count_and_keys_only() {
    let (_server, mut c) = start().await;
    fixture(&mut c).await;

    let get = c
        .get("p/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(get.kvs()), ["p/a", "p/b", "p/c", "p/d"]);
    assert_eq!(values(get.kvs()), ["3", "0", "9", "5"]);
    assert_eq!(get.count(), 4);

    // limit: the page and `more`, with `count` the whole range.
    let get = c
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(keys(get.kvs()), ["p/a", "p/b"]);
    assert!(get.more());
    assert_eq!(get.count(), 4);
    let get = c
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(4)))
        .await
        .unwrap();
    assert!(!get.more());

    // sort
    let sorted = |target, order| GetOptions::new().with_prefix().with_sort(target, order);
    let get = c
        .get("p/", Some(sorted(SortTarget::Value, SortOrder::Ascend)))
        .await
        .unwrap();
    assert_eq!(values(get.kvs()), ["0", "3", "5", "9"]);
    let get = c
        .get("p/", Some(sorted(SortTarget::Mod, SortOrder::Descend)))
        .await
        .unwrap();
    assert_eq!(keys(get.kvs()), ["p/b", "p/d", "p/c", "p/a"]);
    let get = c
        .get("p/", Some(sorted(SortTarget::Create, SortOrder::Descend)))
        .await
        .unwrap();
    assert_eq!(keys(get.kvs()), ["p/d", "p/c", "p/b", "p/a"]);
    let get = c
        .get(
            "p/",
            Some(sorted(SortTarget::Version, SortOrder::Descend).with_limit(2)),
        )
        .await
        .unwrap();
    // Versions: b 2, c 2, a 1, d 1; ties in key order.
    assert_eq!(keys(get.kvs()), ["p/b", "p/c"]);
    assert!(get.more());
    let get = c
        .get("p/", Some(sorted(SortTarget::Key, SortOrder::Descend)))
        .await
        .unwrap();
    assert_eq!(keys(get.kvs()), ["p/d", "p/c", "p/b", "p/a"]);

    // revision: the store as it was.
    let get = c
        .get("p/", Some(GetOptions::new().with_prefix().with_revision(4)))
        .await
        .unwrap();
    assert_eq!(keys(get.kvs()), ["p/a", "p/b", "p/c"]);
    assert_eq!(values(get.kvs()), ["3", "1", "2"]);
    assert_eq!(
        revision(get.header()),
        8,
        "the header carries the current revision"
    );
    let err = status(
        c.get("p/a", Some(GetOptions::new().with_revision(9)))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    // count only: the count, no kvs.
    let get = c
        .get(
            "p/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(get.count(), 4);
    assert!(get.kvs().is_empty());
    let get = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(get.count(), 5);

    // keys only: keys and metadata, no values.
    let get = c
        .get("p/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .unwrap();
    assert_eq!(keys(get.kvs()), ["p/a", "p/b", "p/c", "p/d"]);
    assert!(get.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(get.kvs()[2].version(), 2);

    // kube-apiserver's paged list: a page at the first page's revision.
    let first = c
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(3)))
        .await
        .unwrap();
    let rev = revision(first.header());
    c.put("p/0", "new", None).await.unwrap();
    let next = c
        .get(
            "p/d",
            Some(
                GetOptions::new()
                    .with_range("p0")
                    .with_limit(3)
                    .with_revision(rev),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(next.kvs()), ["p/d"]);
    assert!(!next.more());
    assert_eq!(next.count(), 1);
}

#[tokio::test]
async fn delete_options_prefix_and_prev_key() {
    let (_server, mut c) = start().await;
    fixture(&mut c).await;
    let del = c
        .delete(
            "p/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), 4);
    assert_eq!(keys(del.prev_kvs()), ["p/a", "p/b", "p/c", "p/d"]);
    assert_eq!(values(del.prev_kvs()), ["3", "0", "9", "5"]);
    assert_eq!(revision(del.header()), 9);
    let left = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(keys(left.kvs()), ["q"]);
    // One revision for the whole range: the history before it is intact.
    let old = c
        .get("p/", Some(GetOptions::new().with_prefix().with_revision(8)))
        .await
        .unwrap();
    assert_eq!(old.count(), 4);
    let del = c
        .delete("q", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(del.deleted(), 1);
    assert!(del.prev_kvs().is_empty(), "prev kvs only when asked");
}

/// kube-apiserver's create: put only if the key does not exist.
fn create(key: &str, value: &str) -> Txn {
    Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)])
}

/// kube-apiserver's update: put only if unchanged since `rev`, else read.
fn update(key: &str, value: &str, rev: i64) -> Txn {
    Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)])
}

fn only_get(ops: &[TxnOpResponse]) -> Vec<KeyValue> {
    match ops {
        [TxnOpResponse::Get(g)] => g.kvs().to_vec(),
        other => panic!("expected one get response, got {other:?}"),
    }
}

fn only_put_revision(ops: &[TxnOpResponse]) -> i64 {
    match ops {
        [TxnOpResponse::Put(p)] => revision(p.header()),
        other => panic!("expected one put response, got {other:?}"),
    }
}

#[tokio::test]
async fn txn_create_if_absent_takes_both_branches() {
    let (_server, mut c) = start().await;
    let created = c.txn(create("/registry/pods/a", "v1")).await.unwrap();
    assert!(created.succeeded());
    assert_eq!(revision(created.header()), 2);
    assert_eq!(only_put_revision(&created.op_responses()), 2);

    // The key exists now: the else branch returns the current object.
    let again = c.txn(create("/registry/pods/a", "v2")).await.unwrap();
    assert!(!again.succeeded());
    assert_eq!(
        revision(again.header()),
        2,
        "a failed create writes nothing"
    );
    let kvs = only_get(&again.op_responses());
    assert_eq!(values(&kvs), ["v1"]);
    assert_eq!(kvs[0].mod_revision(), 2);

    // After a delete the key is absent again.
    c.delete("/registry/pods/a", None).await.unwrap();
    let recreated = c.txn(create("/registry/pods/a", "v3")).await.unwrap();
    assert!(recreated.succeeded());
    let kv = c.get("/registry/pods/a", None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.value(), kv.version(), kv.create_revision()),
        (&b"v3"[..], 1, 4)
    );
}

#[tokio::test]
async fn txn_update_if_unchanged_takes_both_branches() {
    let (_server, mut c) = start().await;
    c.put("/registry/cm/x", "v1", None).await.unwrap();
    c.put("/registry/other", "o", None).await.unwrap();

    let updated = c.txn(update("/registry/cm/x", "v2", 2)).await.unwrap();
    assert!(updated.succeeded());
    assert_eq!(only_put_revision(&updated.op_responses()), 4);
    assert_eq!(revision(updated.header()), 4);

    // A stale revision: nothing written, the current object comes back.
    let stale = c.txn(update("/registry/cm/x", "v3", 2)).await.unwrap();
    assert!(!stale.succeeded());
    assert_eq!(revision(stale.header()), 4);
    let kvs = only_get(&stale.op_responses());
    assert_eq!(values(&kvs), ["v2"]);
    assert_eq!((kvs[0].mod_revision(), kvs[0].version()), (4, 2));

    // Retry with the revision just read.
    let retried = c
        .txn(update("/registry/cm/x", "v3", kvs[0].mod_revision()))
        .await
        .unwrap();
    assert!(retried.succeeded());
    let kv = c.get("/registry/cm/x", None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.value(), kv.mod_revision(), kv.version()),
        (&b"v3"[..], 5, 3)
    );

    // kube's delete shape.
    let delete = |rev| {
        Txn::new()
            .when([Compare::mod_revision(
                "/registry/cm/x",
                CompareOp::Equal,
                rev,
            )])
            .and_then([TxnOp::delete("/registry/cm/x", None)])
            .or_else([TxnOp::get("/registry/cm/x", None)])
    };
    let stale = c.txn(delete(4)).await.unwrap();
    assert!(!stale.succeeded());
    assert_eq!(only_get(&stale.op_responses())[0].mod_revision(), 5);
    let deleted = c.txn(delete(5)).await.unwrap();
    assert!(deleted.succeeded());
    match deleted.op_responses().as_slice() {
        [TxnOpResponse::Delete(d)] => assert_eq!(d.deleted(), 1),
        other => panic!("expected one delete response, got {other:?}"),
    }
    assert_eq!(c.get("/registry/cm/x", None).await.unwrap().count(), 0);
}

#[tokio::test]
async fn compact_then_read_below_it_fails_with_the_compacted_error() {
    let (_server, mut c) = start().await;
    for v in ["1", "2", "3", "4"] {
        c.put("k", v, None).await.unwrap();
    }
    // Revision 5.
    let compacted = c.compact(4, None).await.unwrap();
    assert_eq!(revision(compacted.header()), 5);
    let err = status(
        c.get("k", Some(GetOptions::new().with_revision(3)))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let at = c
        .get("k", Some(GetOptions::new().with_revision(4)))
        .await
        .unwrap();
    assert_eq!(values(at.kvs()), ["3"]);

    let err = status(c.compact(4, None).await.unwrap_err());
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let err = status(c.compact(6, None).await.unwrap_err());
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    c.compact(5, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let err = status(
        c.get("k", Some(GetOptions::new().with_revision(4)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let now = c.get("k", None).await.unwrap();
    assert_eq!(values(now.kvs()), ["4"]);
    assert_eq!(
        now.kvs()[0].version(),
        4,
        "compaction keeps the live key's version"
    );
}

/// `major.minor.patch[-pre]` as numbers.
fn semver(v: &str) -> (u64, u64, u64) {
    let core = v.split(['-', '+']).next().unwrap();
    let parts: Vec<u64> = core
        .split('.')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("not semver: {v:?}")))
        .collect();
    assert_eq!(parts.len(), 3, "not semver: {v:?}");
    (parts[0], parts[1], parts[2])
}

#[tokio::test]
async fn status_reports_an_etcd_version_the_leader_and_the_term() {
    let (_server, mut c) = start().await;
    c.put("k", "v", None).await.unwrap();
    let s = c.status().await.unwrap();
    let v = semver(s.version());
    assert!(v >= (3, 4, 0), "version {:?} is below 3.4", s.version());
    let header = s.header().expect("header");
    assert_ne!(header.member_id(), 0);
    assert_ne!(header.cluster_id(), 0);
    assert_eq!(s.leader(), header.member_id(), "a lone member leads");
    assert!(s.raft_term() >= 1);
    assert_eq!(header.raft_term(), s.raft_term());
    assert_eq!(header.revision(), 2);
    assert!(s.raft_index() >= 2, "raft index {}", s.raft_index());
    assert_eq!(s.raft_applied_index(), s.raft_index());
    assert!(s.db_size() > 0);
    assert!(!s.is_learner());
    assert!(s.errors().is_empty());
    // Each write is one more raft entry.
    c.put("k", "v2", None).await.unwrap();
    let s2 = c.status().await.unwrap();
    assert_eq!(s2.raft_index(), s.raft_index() + 1);
    assert_eq!(s2.header().unwrap().revision(), 3);
}

#[tokio::test]
async fn member_list_shows_this_member_with_its_urls() {
    let (server, mut c) = start().await;
    let status = c.status().await.unwrap();
    let list = c.member_list().await.unwrap();
    let members = list.members();
    assert_eq!(members.len(), 1);
    let m = &members[0];
    assert_eq!(m.id(), status.header().unwrap().member_id());
    assert_eq!(m.name(), "default");
    assert_eq!(m.client_urls(), std::slice::from_ref(&server.client_url));
    assert_eq!(m.peer_urls().len(), 1);
    assert!(
        m.peer_urls()[0].starts_with("http://127.0.0.1:"),
        "{:?}",
        m.peer_urls()
    );
    assert_ne!(m.peer_urls()[0], server.client_url);
    assert!(!m.is_learner());
    let header = list.header().unwrap();
    assert_eq!(header.member_id(), m.id());
    assert_eq!(header.cluster_id(), status.header().unwrap().cluster_id());
}
