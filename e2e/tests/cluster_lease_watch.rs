//! Leases, watches and locks on three-member clusters: each scenario runs,
//! with the same assertions, against etcd 3.4 (`*_on_etcd`) and against
//! ferrocd (`*_on_ferrocd`), as in `cluster.rs`.
//!
//! Members run on loopback with a 50 ms heartbeat and a 500 ms election
//! timeout (`ferrocd_e2e::FAST_ELECTIONS`). Requests go through followers
//! wherever the scenario allows, so that lease grants and writes are
//! forwarded to the leader, keep-alives reach the leader's lessor through
//! a follower, and watches are served from a follower's own store.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use ferrocd_e2e::{require_tool, Cluster, Kind, Server};

/// A cluster of three `kind` members; `None` (skip) outside CI when etcd
/// or etcdctl is missing.
async fn three(kind: Kind) -> Option<Cluster> {
    if !require_tool("etcdctl") {
        return None;
    }
    match kind {
        Kind::Etcd => Cluster::etcd(3, &[]).await,
        Kind::Ferrocd => Some(Cluster::ferrocd(3, &[]).await),
    }
}

/// The leader and the two followers, by index.
async fn roles(cluster: &Cluster) -> (usize, usize, usize) {
    let leader = cluster.leader().await;
    (leader, (leader + 1) % 3, (leader + 2) % 3)
}

/// A client of one member only. Unary requests fail after 10 s; streams
/// get no deadline (the client's timeout would cut them).
/// A lease of `ttl` seconds granted through member `grant_on`, `key` put
/// with it there, and a keep-alive stream opened through member `keep_on`.
/// Returns the client on `grant_on`, the lease id, the stream's halves and
/// the client they run on.
async fn leased_key(
    cluster: &Cluster,
    grant_on: usize,
    keep_on: usize,
    ttl: i64,
    key: &str,
) -> (Client, i64, LeaseKeeper, LeaseKeepAliveStream, Client) {
    let mut c = client(&cluster.members[grant_on], false).await;
    let lease = c.lease_grant(ttl, None).await.expect("grant").id();
    c.put(key, "held", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with the lease");
    let mut keeping = client(&cluster.members[keep_on], true).await;
    let (keeper, stream) = keeping.lease_keep_alive(lease).await.expect("keep-alive");
    (c, lease, keeper, stream, keeping)
}

async fn client(member: &Server, stream: bool) -> Client {
    let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    if !stream {
        options = options.with_timeout(Duration::from_secs(10));
    }
    Client::connect([member.client_url.as_str()], Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", member.name))
}

/// A serializable read of `key` on `c`: its value, if the member has it.
async fn local_value(c: &mut Client, key: &str) -> Result<Option<String>, String> {
    let resp = c
        .get(key, Some(GetOptions::new().with_serializable()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// Waits up to `timeout` until a serializable read of `key` on every
/// running member finds `value` (`None`: no key); false if one never did.
async fn everywhere(cluster: &Cluster, key: &str, value: Option<&str>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    for m in cluster.members.iter().filter(|m| m.is_running()) {
        let mut c = client(m, false).await;
        while local_value(&mut c, key)
            .await
            .ok()
            .as_ref()
            .map(Option::as_deref)
            != Some(value)
        {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    true
}

/// TimeToLive of `lease` through `c`, with its keys: (remaining TTL,
/// granted TTL, keys).
async fn time_to_live(c: &mut Client, lease: i64) -> (i64, i64, Vec<String>) {
    let r = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("LeaseTimeToLive");
    let keys = r
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    (r.ttl(), r.granted_ttl(), keys)
}

/// Sends one keep-alive on `keeper` and waits up to `timeout` for its
/// answer: the TTL it grants.
async fn keep_alive_once(
    keeper: &mut LeaseKeeper,
    stream: &mut LeaseKeepAliveStream,
    timeout: Duration,
) -> Result<i64, String> {
    keeper.keep_alive().await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(r))) => Ok(r.ttl()),
        Ok(Ok(None)) => Err("the keep-alive stream ended".into()),
        Ok(Err(e)) => Err(format!("the keep-alive stream failed: {e}")),
        Err(_) => Err(format!("no keep-alive answer in {timeout:?}")),
    }
}

// ------------------------------------------------ a. lease through followers

const TTL: i64 = 3;

/// A lease granted through one follower and kept alive through the other
/// lives past its TTL; once the keep-alives stop it expires, about a TTL
/// later, and its key goes from every member.
async fn lease_kept_alive_through_a_follower_expires_on_every_member(kind: Kind) {
    let Some(cluster) = three(kind).await else {
        return;
    };
    let (_, f1, f2) = roles(&cluster).await;
    // Kept alive through the other follower for twice its TTL.
    let (mut c1, lease, mut keeper, mut stream, c2) =
        leased_key(&cluster, f1, f2, TTL, "lease/a").await;
    let kept_until = Instant::now() + Duration::from_secs(2 * TTL as u64);
    let mut last_renewal = Instant::now();
    while Instant::now() < kept_until {
        let ttl = keep_alive_once(&mut keeper, &mut stream, Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: keep-alive through follower m{f2}: {e}"));
        assert_eq!(ttl, TTL, "{kind:?}: TTL granted by a keep-alive");
        last_renewal = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ttl, granted, keys) = time_to_live(&mut c1, lease).await;
    assert_eq!(granted, TTL, "{kind:?}: granted TTL");
    assert!(
        (1..=TTL).contains(&ttl),
        "{kind:?}: remaining TTL {ttl} after keep-alives (granted {TTL})"
    );
    assert_eq!(keys, ["lease/a"], "{kind:?}: keys attached to the lease");
    assert!(
        everywhere(&cluster, "lease/a", Some("held"), Duration::from_secs(5)).await,
        "{kind:?}: the key of a lease kept alive past its TTL is missing on a member"
    );

    // No more keep-alives: the lease expires and takes its key along.
    drop((keeper, stream, c2));
    let gone = everywhere(
        &cluster,
        "lease/a",
        None,
        Duration::from_secs(TTL as u64 + 5),
    )
    .await;
    let after = last_renewal.elapsed();
    eprintln!(
        "{kind:?}: key of the lease gone on every member {after:?} after the last keep-alive"
    );
    assert!(
        gone,
        "{kind:?}: the key is still there {after:?} after the last keep-alive"
    );
    assert!(
        after >= Duration::from_secs(TTL as u64) - Duration::from_millis(500),
        "{kind:?}: the lease expired {after:?} after the last keep-alive, before its TTL of {TTL} s"
    );
    let (ttl, _, keys) = time_to_live(&mut c1, lease).await;
    assert_eq!(
        (ttl, keys.len()),
        (-1, 0),
        "{kind:?}: TimeToLive of the expired lease"
    );
}

ferrocd_e2e::on_etcd_and_ferrocd!(lease_kept_alive_through_a_follower_expires_on_every_member);

// ------------------------------------------------ b. lease across a leader crash

const CRASH_TTL: i64 = 5;

/// Keep-alives through a follower go on working when the leader dies: the
/// follower renews with the new leader, and the lease and its key live on.
async fn lease_kept_alive_survives_a_leader_crash(kind: Kind) {
    let Some(mut cluster) = three(kind).await else {
        return;
    };
    let (old, f1, f2) = roles(&cluster).await;
    let (mut c1, lease, mut keeper, mut stream, _c2) =
        leased_key(&cluster, f1, f2, CRASH_TTL, "crash/a").await;
    keep_alive_once(&mut keeper, &mut stream, Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: keep-alive before the crash: {e}"));

    cluster.members[old].kill9();
    let killed = Instant::now();
    // One keep-alive every 500 ms on the same stream; each must be answered
    // (the member retries toward the new leader), the first within a few
    // election timeouts of the crash.
    let mut first = None;
    while killed.elapsed() < Duration::from_secs(2 * CRASH_TTL as u64) {
        let ttl = keep_alive_once(&mut keeper, &mut stream, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{kind:?}: keep-alive through m{f2} {:?} after killing the leader m{old}: {e}",
                    killed.elapsed()
                )
            });
        assert_eq!(
            ttl, CRASH_TTL,
            "{kind:?}: TTL granted by a keep-alive after the crash"
        );
        first.get_or_insert_with(|| killed.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first = first.expect("a keep-alive answered");
    eprintln!("{kind:?}: first keep-alive answered {first:?} after killing the leader");
    assert!(
        first < Duration::from_secs(5),
        "{kind:?}: the first keep-alive after the crash took {first:?}"
    );
    let new = cluster.leader().await;
    assert_ne!(new, old, "{kind:?}: the killed member is still the leader");

    // Kept alive for twice its TTL since the crash: still there.
    let (ttl, granted, keys) = time_to_live(&mut c1, lease).await;
    assert_eq!(granted, CRASH_TTL, "{kind:?}: granted TTL");
    assert!(
        (1..=CRASH_TTL).contains(&ttl),
        "{kind:?}: remaining TTL {ttl} after the crash"
    );
    assert_eq!(keys, ["crash/a"], "{kind:?}: keys attached to the lease");
    assert!(
        everywhere(&cluster, "crash/a", Some("held"), Duration::from_secs(5)).await,
        "{kind:?}: the key of a lease kept alive across the crash is missing on a survivor"
    );
}

ferrocd_e2e::on_etcd_and_ferrocd!(lease_kept_alive_survives_a_leader_crash);

// ------------------------------------------------ c. watch on a follower

/// Acknowledged writes before and after the crash.
const WRITES_BEFORE: usize = 40;
const WRITES_AFTER: usize = 60;

/// One put attempt of the writer: its key and value, and the revision it
/// was acknowledged at (`None`: failed, it may or may not have happened).
struct Attempt {
    key: String,
    value: String,
    acked: Option<i64>,
}

/// Puts a fresh key `watch/NNNN` through `c` (a new key for every attempt,
/// so that a failed put that happened anyway is told apart from a retry).
async fn attempt(c: &mut Client, log: &mut Vec<Attempt>) -> bool {
    let key = format!("watch/{:04}", log.len());
    let value = format!("v{}", log.len());
    let acked = match c.put(key.as_str(), value.as_str(), None).await {
        Ok(r) => Some(r.header().expect("header").revision()),
        Err(_) => None,
    };
    log.push(Attempt { key, value, acked });
    acked.is_some()
}

/// One event as the watch delivered it.
struct Watched {
    key: String,
    value: String,
    revision: i64,
    kind: EventType,
}

/// The events of one watch response.
fn watched(r: &etcd_client::WatchResponse) -> Vec<Watched> {
    r.events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            Some(Watched {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: String::from_utf8_lossy(kv.value()).into_owned(),
                revision: kv.mod_revision(),
                kind: e.event_type(),
            })
        })
        .collect()
}

/// A watch on a follower delivers every write made through the other
/// members, in order and once, before and after the leader dies.
async fn watch_on_a_follower_sees_every_write_once_across_a_leader_crash(kind: Kind) {
    let Some(mut cluster) = three(kind).await else {
        return;
    };
    let (old, watcher, writer) = roles(&cluster).await;
    let mut wc = client(&cluster.members[watcher], true).await;
    let mut watch = wc
        .watch("watch/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let created = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("created in 5 s")
        .expect("watch stream")
        .expect("a created response");
    assert!(created.created(), "{kind:?}: first response: {created:?}");
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            match watch.message().await {
                Ok(Some(r)) if r.canceled() => {
                    let _ = tx.send(Err(format!("the watch was canceled: {r:?}")));
                    return;
                }
                Ok(Some(r)) => {
                    if tx.send(Ok(watched(&r))).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Err("the watch stream ended".to_string()));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("the watch stream failed: {e}")));
                    return;
                }
            }
        }
    });

    // Writes through the two other members in turn, then the leader dies
    // and the writes go on through the surviving other member.
    let mut to_leader = client(&cluster.members[old], false).await;
    let mut to_writer = client(&cluster.members[writer], false).await;
    let mut log = Vec::new();
    let mut acked = 0;
    while acked < WRITES_BEFORE {
        let c = if log.len() % 2 == 0 {
            &mut to_leader
        } else {
            &mut to_writer
        };
        acked += usize::from(attempt(c, &mut log).await);
    }
    cluster.members[old].kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked < WRITES_BEFORE + WRITES_AFTER {
        assert!(
            Instant::now() < deadline,
            "{kind:?}: only {acked} writes acknowledged 30 s after the crash"
        );
        if attempt(&mut to_writer, &mut log).await {
            acked += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let last = log
        .iter()
        .rev()
        .find_map(|a| a.acked)
        .expect("an acked write");

    // Everything the watch delivers up to the last acknowledged revision.
    let mut seen: Vec<Watched> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.last().is_none_or(|e| e.revision < last) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(Ok(batch))) => seen.extend(batch),
            Ok(Some(Err(e))) => panic!("{kind:?}: watch on m{watcher}: {e} (after {} events)", seen.len()),
            Ok(None) => panic!("{kind:?}: watch reader gone"),
            Err(_) => panic!(
                "{kind:?}: the watch on m{watcher} delivered {} events, up to revision {:?}, not {last}, in 10 s",
                seen.len(),
                seen.last().map(|e| e.revision)
            ),
        }
    }
    reader.abort();
    eprintln!(
        "{kind:?}: {} puts attempted, {acked} acknowledged, {} events watched",
        log.len(),
        seen.len()
    );

    // In order, without gaps: only these puts changed the store since the
    // watch was created, so the events' revisions follow on from there.
    let from = created.header().expect("header").revision() + 1;
    let revisions: Vec<i64> = seen.iter().map(|e| e.revision).collect();
    let expected: Vec<i64> = (from..from + seen.len() as i64).collect();
    assert_eq!(
        revisions, expected,
        "{kind:?}: revisions of the watched events"
    );
    assert!(
        seen.iter().all(|e| e.kind == EventType::Put),
        "{kind:?}: only puts were made"
    );
    // Exactly once per acknowledged put, at its revision; other events only
    // for failed attempts (which may have happened anyway).
    let by_key: BTreeMap<&str, &Watched> = seen.iter().map(|e| (e.key.as_str(), e)).collect();
    assert_eq!(by_key.len(), seen.len(), "{kind:?}: a key watched twice");
    for a in &log {
        let got = by_key
            .get(a.key.as_str())
            .map(|e| (e.value.as_str(), e.revision));
        match a.acked {
            Some(rev) => assert_eq!(
                got,
                Some((a.value.as_str(), rev)),
                "{kind:?}: event of the acknowledged put of {}",
                a.key
            ),
            None => {
                if let Some((value, _)) = got {
                    assert_eq!(value, a.value, "{kind:?}: value of {}", a.key);
                }
            }
        }
    }
    let attempted: Vec<&str> = log.iter().map(|a| a.key.as_str()).collect();
    assert!(
        by_key.keys().all(|k| attempted.contains(k)),
        "{kind:?}: an event for a put never made"
    );
}

ferrocd_e2e::on_etcd_and_ferrocd!(watch_on_a_follower_sees_every_write_once_across_a_leader_crash);

// ------------------------------------------------ d. etcdctl lock

/// `etcdctl lock jobs -- sh -c ...` through `endpoint` that appends
/// `<me> start` and, after `hold`, `<me> end` to `order`.
fn lock_contender(endpoint: &str, me: &str, hold: &str, order: &Path) -> Child {
    let script =
        format!("echo {me} start >> \"$ORDER\"; sleep {hold}; echo {me} end >> \"$ORDER\"");
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .env("ORDER", order)
        .arg(format!("--endpoints={endpoint}"))
        .args(["lock", "jobs", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl lock")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits up to `timeout` for `child` to exit; its output, or a panic.
async fn finished(mut child: Child, timeout: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} still running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.wait_with_output().expect("output")
}

/// `etcdctl lock` through two different followers: the second contender
/// runs its command only after the first's has finished.
async fn lock_contenders_on_two_members_take_turns(kind: Kind) {
    let Some(cluster) = three(kind).await else {
        return;
    };
    let (_, f1, f2) = roles(&cluster).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let order = dir.path().join("order");
    let a = lock_contender(&cluster.members[f1].endpoint, "A", "1.5", &order);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&order).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{kind:?}: A never got the free lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = lock_contender(&cluster.members[f2].endpoint, "B", "0", &order);
    // While A holds the lock, B waits with its own key under the lock name.
    let mut c = client(&cluster.members[f2], false).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys = c
            .get(
                "jobs/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .expect("get jobs/")
            .kvs()
            .len();
        if keys == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: {keys} keys under jobs/ while A holds the lock and B waits"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        lines(&order),
        ["A start"],
        "{kind:?}: while A holds the lock"
    );

    for (who, child) in [("A", a), ("B", b)] {
        let out = finished(
            child,
            Duration::from_secs(15),
            &format!("{kind:?}: lock {who}"),
        )
        .await;
        assert!(
            out.status.success(),
            "{kind:?}: etcdctl lock {who} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        lines(&order),
        ["A start", "A end", "B start", "B end"],
        "{kind:?}: the lock held by one contender at a time"
    );
    let left = c
        .get(
            "jobs/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("get jobs/")
        .kvs()
        .len();
    assert_eq!(
        left, 0,
        "{kind:?}: lock keys left after both released the lock"
    );
}

ferrocd_e2e::on_etcd_and_ferrocd!(lock_contenders_on_two_members_take_turns);
