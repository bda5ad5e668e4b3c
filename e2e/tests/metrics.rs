//! `/metrics` against etcd 3.4's: the same workload on both, then every
//! metric etcd's Grafana dashboard and alert rules read that etcd exposes
//! must be exposed by ferrocd too, with the same type, help text and label
//! names, and the counters the workload moves must have moved alike.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrocd_e2e::{Cluster, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What etcd's dashboard (Documentation/op-guide/grafana.json) and alert
/// rules (etcd3_alert.rules.yml) read, and the gauges beside them.
const WANTED: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_is_learner",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_server_slow_apply_total",
    "etcd_server_heartbeat_send_failures_total",
    "etcd_server_health_success",
    "etcd_server_health_failures",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_cluster_version",
    "etcd_server_learner_promote_successes",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_debugging_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_current_revision",
    "etcd_debugging_mvcc_compact_revision",
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_txn_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_debugging_lease_granted_total",
    "etcd_debugging_lease_revoked_total",
    "etcd_network_peer_round_trip_time_seconds",
    "etcd_network_peer_sent_failures_total",
    "etcd_network_peer_received_failures_total",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_client_grpc_received_bytes_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_msg_received_total",
    "grpc_server_msg_sent_total",
    "grpc_server_handling_seconds",
    "process_resident_memory_bytes",
];

/// One metric family as scraped.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    /// Each sample: its name (with `_bucket`, `_sum`... for histograms),
    /// labels and value.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Family {
    /// The label names its samples carry (`le` aside).
    fn label_names(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .flat_map(|(_, labels, _)| labels.keys().cloned())
            .filter(|l| l != "le")
            .collect()
    }

    /// The value of the sample named `name` whose labels include `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// Samples with a non-zero value, by name and labels.
    fn nonzero(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|(_, _, v)| *v != 0.0)
            .map(|(n, l, v)| (format!("{n}{l:?}"), *v))
            .collect()
    }
}

/// Parses Prometheus' text format into families by name.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.into()).or_default().help = help.into();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            families.entry(name.into()).or_default().kind = kind.into();
        } else if !line.starts_with('#') && !line.is_empty() {
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("label");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|base| {
                    families
                        .get(*base)
                        .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
                })
                .unwrap_or(name);
            let value = value.parse().expect("sample value");
            families
                .get_mut(family)
                .unwrap_or_else(|| panic!("sample {name} before its TYPE"))
                .samples
                .push((name.to_string(), labels, value));
        }
    }
    families
}

/// `GET /metrics` on `endpoint` (host:port), parsed.
async fn scrape(endpoint: &str) -> BTreeMap<String, Family> {
    let mut conn = tokio::net::TcpStream::connect(endpoint)
        .await
        .expect("connect");
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 metrics");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // etcd answers with a chunked body.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    parse(&body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The workload: two puts, a get, a delete, a txn, a lease, and a watch
/// that sees one event and is then closed by its client.
async fn workload(server: &Server) {
    ok(server.etcdctl(&["put", "a", "1"]));
    ok(server.etcdctl(&["get", "a"]));
    ok(server.etcdctl(&["del", "a"]));
    let txn = ok(server.etcdctl_with_input(&["txn"], Some("\nput b 2\n\n\n")));
    assert!(txn.starts_with("SUCCESS"), "{txn}");
    ok(server.etcdctl(&["lease", "grant", "60"]));
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint))
        .args(["watch", "x"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    // The watch is open once the server counts a watcher.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(
        &scrape(&server.endpoint).await,
        "etcd_debugging_mvcc_watcher_total",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "the watch never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(server.etcdctl(&["put", "x", "1"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    watch.kill().expect("stop etcdctl watch");
    let out = watch.wait_with_output().expect("etcdctl watch output");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PUT\nx\n1"),
        "the watch saw no event"
    );
}

fn gauge(families: &BTreeMap<String, Family>, name: &str) -> f64 {
    families
        .get(name)
        .and_then(|f| f.value(name, &[]))
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// Scrapes `server` until the grpc Watch call is handled and the store
/// was committed to disk (ferrocd flushes it every second), at most 5 s.
async fn settled(server: &Server) -> BTreeMap<String, Family> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&server.endpoint).await;
        let watch_done = m["grpc_server_handled_total"]
            .value(
                "grpc_server_handled_total",
                &[("grpc_method", "Watch"), ("grpc_code", "Canceled")],
            )
            .unwrap_or(0.0)
            >= 1.0;
        let committed = m["etcd_disk_backend_commit_duration_seconds"]
            .value("etcd_disk_backend_commit_duration_seconds_count", &[])
            .unwrap_or(0.0)
            > 0.0;
        if (watch_done && committed) || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every wanted family etcd exposes, ferrocd exposes alike.
fn assert_same_families(etcd: &BTreeMap<String, Family>, ferrocd: &BTreeMap<String, Family>) {
    let mut compared = 0;
    for name in WANTED {
        let Some(e) = etcd.get(*name) else { continue };
        let f = ferrocd
            .get(*name)
            .unwrap_or_else(|| panic!("etcd exposes {name}, ferrocd does not"));
        assert_eq!(f.kind, e.kind, "TYPE of {name}");
        if !name.starts_with("process_") {
            assert_eq!(f.help, e.help, "HELP of {name}");
        }
        assert_eq!(f.label_names(), e.label_names(), "label names of {name}");
        compared += 1;
    }
    assert!(compared > 20, "only {compared} families compared");
}

/// The non-zero per-method gRPC samples of the services the workload used.
fn grpc_calls(m: &BTreeMap<String, Family>) -> BTreeMap<String, f64> {
    [
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total",
    ]
    .iter()
    .flat_map(|name| m[*name].nonzero())
    .filter(|(k, _)| {
        ["KV", "Watch", "Lease"]
            .iter()
            .any(|s| k.contains(&format!("\"etcdserverpb.{s}\"")))
    })
    .collect()
}

#[tokio::test]
async fn metrics_match_etcd_after_the_same_workload() {
    let Some(etcd) = Server::etcd(&[]).await else {
        return;
    };
    let ferrocd = Server::ferrocd(&[]).await;
    workload(&etcd).await;
    workload(&ferrocd).await;
    let (e, f) = (settled(&etcd).await, settled(&ferrocd).await);

    assert_same_families(&e, &f);
    // Basic detail: no per-method latency histograms on either.
    assert!(!e.contains_key("grpc_server_handling_seconds"));
    assert!(!f.contains_key("grpc_server_handling_seconds"));

    // The calls were counted alike: started, handled with their codes (the
    // watch cancelled by its client), messages each way.
    assert_eq!(grpc_calls(&f), grpc_calls(&e));
    let puts_ok = f["grpc_server_handled_total"]
        .value(
            "grpc_server_handled_total",
            &[("grpc_method", "Put"), ("grpc_code", "OK")],
        )
        .unwrap();
    assert!(puts_ok >= 2.0, "{puts_ok}");
    // Every known method starts at zero, with every code, as etcd's do.
    assert!(f["grpc_server_handled_total"]
        .value(
            "grpc_server_handled_total",
            &[("grpc_method", "MemberList"), ("grpc_code", "Unavailable")],
        )
        .is_some());

    // The store's counters moved as etcd's did.
    for name in [
        "etcd_mvcc_put_total",
        "etcd_mvcc_delete_total",
        "etcd_mvcc_range_total",
        "etcd_mvcc_txn_total",
        "etcd_debugging_lease_granted_total",
        "etcd_debugging_lease_revoked_total",
        "etcd_debugging_mvcc_current_revision",
        "etcd_debugging_mvcc_compact_revision",
        "etcd_debugging_mvcc_watcher_total",
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_server_is_learner",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_pending",
        "etcd_server_proposals_failed_total",
    ] {
        assert_eq!(gauge(&f, name), gauge(&e, name), "{name}");
    }
    let committed = gauge(&f, "etcd_server_proposals_committed_total");
    assert!(committed >= 5.0, "committed {committed}");
    assert!(gauge(&f, "etcd_server_proposals_applied_total") <= committed);
    for hist in [
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds",
    ] {
        let count = f[hist].value(&format!("{hist}_count"), &[]).unwrap();
        assert!(count > 0.0, "{hist} observed nothing");
        let le_8s = f[hist]
            .value(&format!("{hist}_bucket"), &[("le", "8.192")])
            .unwrap();
        assert_eq!(le_8s, count, "{hist}: etcd's buckets, all under 8 s");
    }
    for bytes in [
        "etcd_network_client_grpc_received_bytes_total",
        "etcd_network_client_grpc_sent_bytes_total",
    ] {
        assert!(gauge(&f, bytes) > 0.0, "{bytes}");
    }
    assert!(gauge(&f, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    let id = format!(
        "{:x}",
        ferrocd.status().await.unwrap().header.unwrap().member_id
    );
    assert!(f["etcd_server_id"]
        .value("etcd_server_id", &[("server_id", &id)])
        .is_some());
}

#[tokio::test]
async fn peer_metrics_and_extensive_detail_match_etcd_in_a_cluster() {
    let extensive = ["--metrics=extensive"];
    let Some(etcd) = Cluster::etcd(3, &extensive).await else {
        return;
    };
    let ferrocd = Cluster::ferrocd(3, &extensive).await;
    for c in [&etcd, &ferrocd] {
        ok(c.etcdctl(&["put", "k", "v"]));
    }
    let (el, fl) = (etcd.leader().await, ferrocd.leader().await);
    // Heartbeats flow every 50 ms: a few round trips have been timed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = scrape(&etcd.members[el].endpoint).await;
    let f = scrape(&ferrocd.members[fl].endpoint).await;

    assert_same_families(&e, &f);
    assert!(e.contains_key("grpc_server_handling_seconds"));
    // The put reached one member, whichever etcdctl picked.
    let mut put = 0.0;
    for m in &ferrocd.members {
        let scraped = scrape(&m.endpoint).await;
        let handling = &scraped["grpc_server_handling_seconds"];
        put += handling
            .value(
                "grpc_server_handling_seconds_count",
                &[("grpc_method", "Put")],
            )
            .unwrap_or(0.0);
    }
    assert_eq!(put, 1.0, "the put's latency is observed once");

    // The leader counts what it sent to and heard from each follower.
    for id in [
        ferrocd.member_id((fl + 1) % 3).await,
        ferrocd.member_id((fl + 2) % 3).await,
    ] {
        let to = format!("{id:x}");
        let sent = f["etcd_network_peer_sent_bytes_total"]
            .value("etcd_network_peer_sent_bytes_total", &[("To", &to)])
            .unwrap_or(0.0);
        assert!(sent > 0.0, "nothing sent to {to}");
        let received = f["etcd_network_peer_received_bytes_total"]
            .value("etcd_network_peer_received_bytes_total", &[("From", &to)])
            .unwrap_or(0.0);
        assert!(received > 0.0, "nothing heard from {to}");
        let rtt = f["etcd_network_peer_round_trip_time_seconds"]
            .value(
                "etcd_network_peer_round_trip_time_seconds_count",
                &[("To", &to)],
            )
            .unwrap_or(0.0);
        assert!(rtt > 0.0, "no round trip to {to} timed");
    }
    assert_eq!(
        f["etcd_network_peer_round_trip_time_seconds"].label_names(),
        BTreeSet::from(["To".to_string()])
    );
}
