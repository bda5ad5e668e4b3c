//! The raft log is compacted behind snapshots (`--snapshot-count`), and a
//! member restarts from its store plus the remaining log without loss.

use clap::Parser;
use ferrocd::config::{Config, Flags};
use ferrocd::mvcc::{KeyRange, RangeOptions, ReadView};
use ferrocd::raft::Request;
use ferrocd_proto::etcdserverpb::PutRequest;
use ferrocd_proto::ferrocdpb::{internal_request, InternalRequest};

fn config(dir: &std::path::Path, snapshot_count: u64) -> Config {
    let flags = Flags::try_parse_from([
        "ferrocd".to_string(),
        format!("--data-dir={}", dir.display()),
        format!("--snapshot-count={snapshot_count}"),
        "--heartbeat-interval=10".to_string(),
        "--election-timeout=100".to_string(),
        // Tests run in parallel: any free port for the peer listener.
        "--listen-peer-urls=http://127.0.0.1:0".to_string(),
    ])
    .unwrap();
    Config::from_flags(flags).unwrap()
}

/// The newest snapshot file. Snapshot files are named by a generation
/// that grows; a build still finishing may briefly leave the one before.
fn snapshot_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("member/snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    files.sort();
    files.pop().expect("a snapshot file")
}

fn put(i: u64) -> Request {
    Request::single(InternalRequest {
        id: i,
        request: Some(internal_request::Request::Put(PutRequest {
            key: format!("key{i:04}").into_bytes(),
            value: vec![b'x'; 100],
            ..Default::default()
        })),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_is_purged_behind_snapshots_and_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 100);
    let ferrocd::server::Node {
        raft,
        mvcc,
        lessor,
        hub,
        backend,
        wal,
        peer_servers,
        ..
    } = ferrocd::server::open(&cfg).await.unwrap();
    for i in 0..6000 {
        raft.client_write(put(i)).await.unwrap();
    }
    // Wait for the snapshot that the last writes triggered to be built.
    let applied = raft.metrics().borrow().last_applied.unwrap().index;
    raft.wait(Some(std::time::Duration::from_secs(20)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index + 100 >= applied),
            "snapshot",
        )
        .await
        .unwrap();
    let (purged, last) = {
        let m = raft.metrics();
        let m = m.borrow();
        (
            m.purged.map(|p| p.index).unwrap_or(0),
            m.last_log_index.unwrap_or(0),
        )
    };
    raft.shutdown().await.unwrap();
    backend.db().flush().unwrap();
    wal.flush().unwrap();
    assert!(purged > 1, "nothing was purged");
    assert!(
        last - purged < 5200,
        "log kept {} entries; at most ~5000 + 100 expected",
        last - purged
    );
    // Segment files wholly behind the purge point are gone.
    let segments = std::fs::read_dir(dir.path().join("member/wal"))
        .unwrap()
        .count();
    assert!(segments >= 1);
    snapshot_file(dir.path());
    for task in peer_servers {
        task.abort();
    }
    drop((raft, mvcc, lessor, hub, backend, wal));
    // The flusher task lets go of the database once the log store is gone.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let node = ferrocd::server::open(&cfg).await.unwrap();
    let (raft, mvcc) = (node.raft, node.mvcc);
    let all = mvcc
        .read()
        .range(KeyRange::new(b"\0", b"\0"), RangeOptions::default())
        .unwrap();
    assert_eq!(all.count, 6000);
    assert_eq!(mvcc.current_revision(), 6001);
    raft.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_snapshot_file_holds_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1_000_000);
    let raft = ferrocd::server::open(&cfg).await.unwrap().raft;
    for i in 0..50 {
        raft.client_write(put(i)).await.unwrap();
    }
    raft.trigger().snapshot().await.unwrap();
    raft.wait(Some(std::time::Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "snapshot")
        .await
        .unwrap();
    let path = snapshot_file(dir.path());
    let entries = ferrocd::snapshot::verify(&path).unwrap();
    // 50 revisions plus metadata entries.
    assert!(entries >= 50, "snapshot holds {entries} entries");
    raft.shutdown().await.unwrap();
}
