//! etcd's data corruption checks on 3-member ferrocd clusters.
//!
//! * With `--experimental-corrupt-check-time=1s`, members that applied the
//!   same log never raise CORRUPT: under writes, compactions, a member
//!   restarted behind the others (catching up from a raft snapshot), which
//!   passes `--experimental-initial-corrupt-check` too.
//! * A member whose state database is altered while it is stopped (one
//!   stored value's bytes changed, its revision kept) refuses to start
//!   with the check at start, with etcd's error and a non-zero exit;
//!   started without it, the leader's periodic check raises CORRUPT for
//!   it, every member lists the alarm and refuses writes with etcd's
//!   error, and the alarm comes back after a disarm while the data differ.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ferrocd_e2e::{require_tool, Cluster, Server};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::PutRequest;

const CHECK_EVERY: &str = "--experimental-corrupt-check-time=1s";
const INITIAL_CHECK: &str = "--experimental-initial-corrupt-check";
const CORRUPT: &str = "etcdserver: corrupt cluster";
/// The value altered on disk, and what it becomes: the same length, so
/// only these bytes of the stored record change.
const ORIGINAL: &str = "victim-value-as-written";
const TAMPERED: &str = "victim-value-ALTERED!!!";

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `log` without its terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(at) = rest.find('\x1b') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// Puts `count` keys `prefix/NNNN`, spread over the members.
async fn put_many(cluster: &Cluster, prefix: &str, count: usize) {
    let mut clients = Vec::new();
    for m in cluster.members.iter().filter(|m| m.is_running()) {
        clients.push(KvClient::new(m.channel().await.expect("connect")));
    }
    for i in 0..count {
        let put = PutRequest {
            key: format!("{prefix}/{i:04}").into_bytes(),
            value: format!("value {i}").into_bytes(),
            ..Default::default()
        };
        let n = clients.len();
        clients[i % n].put(put).await.expect("put");
    }
}

/// Compacts the history up to the current revision, through `via`.
fn compact_all(via: &Server) {
    let status = ok(via.etcdctl(&["endpoint", "status", "-w", "json"]), "status");
    let revision: i64 = status
        .split("\"revision\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {status}"));
    ok(
        via.etcdctl(&["compaction", "--physical", &revision.to_string()]),
        "compaction",
    );
}

/// Changes the bytes of a stored value (`ORIGINAL` to `TAMPERED`) in the
/// live state tree of a stopped member's database, keeping the record's
/// revision: the member's data diverge without raft knowing.
fn tamper(data_dir: &Path) {
    let member = data_dir.join("member");
    let live = ferrocd::raft::backend::defrag::live_db_path(&member).expect("the live database");
    let db = sled::open(live).expect("open the member's state database");
    let backend =
        ferrocd::raft::Backend::open(&db, &member.join("snap")).expect("open the backend");
    let tree = backend.state_tree().expect("the live state tree");
    let mut altered = 0;
    for item in tree.iter() {
        let (key, value) = item.expect("read a record");
        let Some(at) = value
            .windows(ORIGINAL.len())
            .position(|w| w == ORIGINAL.as_bytes())
        else {
            continue;
        };
        let mut changed = value.to_vec();
        changed[at..at + TAMPERED.len()].copy_from_slice(TAMPERED.as_bytes());
        tree.insert(key, changed).expect("rewrite the record");
        altered += 1;
    }
    assert_eq!(altered, 1, "exactly one record holds the value to alter");
    tree.flush().expect("flush");
    db.flush().expect("flush");
}

/// Polls `check` every 100 ms until it returns `Some`, for up to `limit`.
async fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_that_applied_the_same_log_raise_no_alarm() {
    if !require_tool("etcdctl") {
        return;
    }
    // Small snapshots: the member restarted behind catches up from one.
    let mut cluster = Cluster::ferrocd(3, &[CHECK_EVERY, "--snapshot-count=40"]).await;
    put_many(&cluster, "a", 60).await;
    compact_all(&cluster.members[0]);
    put_many(&cluster, "b", 20).await;
    let leader = cluster.leader().await;
    let behind = (leader + 1) % 3;
    cluster.members[behind].terminate();
    put_many(&cluster, "c", 150).await;
    // The check at start compares the restarted member's store at its own
    // revision with the others', compacted at the same revision.
    cluster.members[behind].set_flag(INITIAL_CHECK, "true");
    cluster.members[behind].restart().await;
    let log = cluster.members[behind].log();
    assert!(
        log.contains("initial corruption checking passed; no corruption"),
        "{log}"
    );
    compact_all(&cluster.members[leader]);
    put_many(&cluster, "d", 40).await;
    // Quiet for a few checks: followers catch up, and hashes are compared.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for m in &cluster.members {
        let alarms = ok(m.etcdctl(&["alarm", "list"]), "alarm list");
        assert_eq!(alarms, "", "{} lists alarms; log:\n{}", m.name, m.log());
    }
    let compared = cluster
        .members
        .iter()
        .any(|m| plain(&m.log()).contains("finished peer corruption check peers_checked=2"));
    assert!(
        compared,
        "no check compared both followers; logs:\n{}",
        cluster.members.iter().map(Server::log).collect::<String>()
    );
    ok(cluster.etcdctl(&["put", "after", "checks"]), "put");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_data_diverged_is_refused_at_start_then_alarmed() {
    if !require_tool("etcdctl") {
        return;
    }
    let mut cluster = Cluster::ferrocd(3, &[CHECK_EVERY]).await;
    put_many(&cluster, "k", 20).await;
    ok(cluster.etcdctl(&["put", "victim", ORIGINAL]), "put victim");
    put_many(&cluster, "z", 5).await;
    let leader = cluster.leader().await;
    let x = (leader + 1) % 3;
    let x_id = cluster.member_id(x).await;
    let serializable = |m: &Server| {
        ok(
            m.etcdctl(&["get", "victim", "--consistency=s", "--print-value-only"]),
            "serializable get",
        )
    };
    let members = &cluster.members;
    eventually(
        "the member applied every write",
        Duration::from_secs(5),
        || (serializable(&members[x]).trim() == ORIGINAL).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.members[x].terminate();
    tamper(&cluster.members[x].data_dir());

    // (a) The check at start finds the difference and refuses to start.
    cluster.members[x].set_flag(INITIAL_CHECK, "true");
    cluster.members[x].launch();
    let member = &mut cluster.members[x];
    let status = eventually("the altered member exits", Duration::from_secs(15), || {
        member.exit_status()
    })
    .await;
    let log = member.log();
    assert!(!status.success(), "{status}; log:\n{log}");
    let refusal = format!("{x_id:x} found data inconsistency with peers");
    assert!(log.contains(&refusal), "no {refusal:?} in:\n{log}");
    // Reap the exited process so that it can be started again.
    member.kill9();

    // (b) Started without it, the leader's periodic check alarms.
    member.set_flag(INITIAL_CHECK, "false");
    member.restart().await;
    assert_eq!(serializable(&cluster.members[x]).trim(), TAMPERED);
    let expected = format!("memberID:{x_id} alarm:CORRUPT");
    let started = Instant::now();
    for m in &cluster.members {
        eventually(
            &format!("{} lists CORRUPT for {x_id:x}", m.name),
            Duration::from_secs(8),
            || {
                let alarms = ok(m.etcdctl(&["alarm", "list"]), "alarm list");
                (alarms.trim() == expected).then_some(())
            },
        )
        .await;
    }
    eprintln!(
        "CORRUPT listed everywhere {:?} after the restart",
        started.elapsed()
    );
    for m in &cluster.members {
        let put = m.etcdctl(&["put", "k/0000", "again"]);
        assert_eq!(put.status.code(), Some(1), "{}", text(&put));
        assert!(
            String::from_utf8_lossy(&put.stderr).contains(CORRUPT),
            "{}",
            text(&put)
        );
    }
    // The data still differ: after a disarm, the next check raises it again.
    let disarmed = ok(cluster.etcdctl(&["alarm", "disarm"]), "alarm disarm");
    assert_eq!(disarmed.trim(), expected);
    let leader = cluster.leader().await;
    let members = &cluster.members;
    eventually("CORRUPT is raised again", Duration::from_secs(8), || {
        let alarms = ok(members[leader].etcdctl(&["alarm", "list"]), "alarm list");
        (alarms.trim() == expected).then_some(())
    })
    .await;
}
