//! Defragment, as etcd operators use it: a member that filled its quota
//! gets back below it with compaction, `etcdctl defrag` and `alarm
//! disarm`, on etcd 3.4 and on ferrocd alike; and on a ferrocd cluster
//! writes go on while every member defragments, losing nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocd_e2e::{Cluster, Server};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{HashKvRequest, PutRequest};

const QUOTA: i64 = 4 * 1024 * 1024;

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Puts 60 kB values until the server refuses one for lack of space.
async fn fill(server: &Server) -> usize {
    let mut kv = KvClient::new(server.channel().await.unwrap());
    for i in 0..400 {
        let put = PutRequest {
            key: format!("fill/{i:04}").into_bytes(),
            value: vec![b'x'; 60_000],
            ..Default::default()
        };
        if let Err(status) = kv.put(put).await {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            return i;
        }
    }
    panic!("the quota was never reached");
}

/// What a user does about NOSPACE; returns what the last put printed.
async fn recover(server: &Server) -> String {
    let filled = fill(server).await;
    assert!(filled > 10, "{filled}");
    let alarms = ok(server.etcdctl(&["alarm", "list"]), "alarm list");
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    ok(server.etcdctl(&["del", "fill/", "--prefix"]), "del");
    let rev = server.status().await.unwrap().header.unwrap().revision;
    ok(
        server.etcdctl(&["compaction", "--physical", &rev.to_string()]),
        "compaction",
    );
    let defrag = ok(server.etcdctl(&["defrag"]), "defrag");
    assert!(
        defrag.starts_with("Finished defragmenting etcd member"),
        "{defrag}"
    );
    let size = server.status().await.unwrap().db_size;
    assert!(
        size < QUOTA / 2,
        "{:?} still holds {size} bytes",
        server.kind
    );
    ok(server.etcdctl(&["alarm", "disarm"]), "alarm disarm");
    ok(
        server.etcdctl(&["put", "after", "recovery"]),
        "put after recovery",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_member_recovers_with_compaction_defrag_and_disarm_as_on_etcd() {
    let quota = format!("--quota-backend-bytes={QUOTA}");
    let Some(etcd) = Server::etcd(&[&quota]).await else {
        return;
    };
    let ferrocd = Server::ferrocd(&[&quota]).await;
    assert_eq!(recover(&ferrocd).await, recover(&etcd).await);
    // And it still holds after a restart.
    let mut ferrocd = ferrocd;
    ferrocd.kill9();
    ferrocd.restart().await;
    let after = ok(
        ferrocd.etcdctl(&["get", "after", "--print-value-only"]),
        "get",
    );
    assert_eq!(after.trim(), "recovery");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_go_on_while_every_member_defragments() {
    let mut cluster = Cluster::ferrocd(3, &[]).await;
    let mut client = cluster.members[0].client().await;
    // History to leave behind: every key written three times, then
    // compacted.
    let value = vec![b'v'; 2000];
    for round in 0..3 {
        for i in 0..300 {
            client
                .put(format!("k{i:03}"), [&value[..], &[round]].concat(), None)
                .await
                .unwrap();
        }
    }
    let rev = cluster.members[0]
        .status()
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    client.compact(rev, None).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // Each acknowledged write: its key, how long it took, when it ended.
    let written: Arc<Mutex<Vec<(String, Duration, Instant)>>> = Arc::default();
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let mut client = cluster.members[1].client().await;
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("during/{n:05}");
                let started = Instant::now();
                client
                    .put(key.clone(), "x", None)
                    .await
                    .expect("a write during defrag");
                written
                    .lock()
                    .unwrap()
                    .push((key, started.elapsed(), Instant::now()));
                n += 1;
            }
        })
    };
    // The writer is under way before the first defrag starts.
    while written.lock().unwrap().len() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut windows = Vec::new();
    for m in &cluster.members {
        let started = Instant::now();
        ok(m.etcdctl(&["defrag"]), "defrag");
        windows.push((started, Instant::now()));
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let written = written.lock().unwrap().clone();
    // Writes were answered while the members defragmented (how many
    // depends on how long a defrag takes, not on anything to assert).
    let during = written
        .iter()
        .filter(|w| windows.iter().any(|(a, b)| (*a..=*b).contains(&w.2)))
        .count();
    assert!(during >= 3, "{during} writes answered during the defrags");
    let slowest = written.iter().map(|w| w.1).max().unwrap();
    println!(
        "{} writes, {during} of them answered while 3 members defragmented, slowest {slowest:?}",
        written.len()
    );

    // Every member holds every acknowledged write and the same history.
    let rev = cluster.members[0]
        .status()
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let mut hashes = Vec::new();
    for m in &cluster.members {
        let mut c = m.client().await;
        let during = c
            .get(
                "during/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_serializable(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(during.kvs().len(), written.len(), "{}", m.name);
        let mut maintenance = MaintenanceClient::new(m.channel().await.unwrap());
        let hash = maintenance
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .unwrap()
            .into_inner();
        hashes.push(hash.hash);
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");

    // A restarted member opens its new database.
    cluster.members[2].kill9();
    cluster.members[2].restart().await;
    let got = ok(
        cluster.members[2].etcdctl(&["get", "k299", "--print-value-only", "--consistency=s"]),
        "get",
    );
    assert_eq!(got.trim_end().len(), 2001);
}
