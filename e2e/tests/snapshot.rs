//! `Maintenance.Snapshot` in etcd's format, judged by etcd's own tools.
//!
//! The same writes go to etcd 3.4 and to ferrocd; `etcdctl snapshot save`
//! fetches a snapshot from each and `etcdctl snapshot status` must report
//! the same revision and total key count for both. The hash and size may
//! differ: lease ids, member ids and URLs differ between the two servers,
//! and the two writers lay pages out differently. Then the ferrocd
//! snapshot is restored with `etcdctl snapshot restore` and a fresh etcd
//! 3.4 started on it must serve what the ferrocd that made it serves.

use std::process::Command;
use std::time::{Duration, Instant};

use ferrocd::bbolt::{BoltError, DbReader};
use ferrocd::etcd_snapshot::layout;
use ferrocd_e2e::snapshots::*;
use ferrocd_e2e::{ferrocd_bin, Kind, Server};
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::SnapshotRequest;
use ferrocd_proto::mvccpb::KeyValue;
use prost::Message;

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_of_etcd_and_ferrocd_agree_and_etcd_restores_ferrocds() {
    let Some(etcd) = Server::etcd(&[]).await else {
        return;
    };
    let ferrocd = Server::ferrocd(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    write_script(&etcd);
    let lease = write_script(&ferrocd);

    let from_etcd = save(&etcd, dir.path(), "etcd.db");
    let from_ferrocd = save(&ferrocd, dir.path(), "ferrocd.db");
    let (s_etcd, s_ferrocd) = (status(&from_etcd), status(&from_ferrocd));
    assert_eq!(
        s_etcd["revision"], s_ferrocd["revision"],
        "{s_etcd} {s_ferrocd}"
    );
    assert_eq!(
        s_etcd["totalKey"], s_ferrocd["totalKey"],
        "{s_etcd} {s_ferrocd}"
    );

    // `ferrocd snapshot status` agrees with etcdctl on both files, hash
    // included; `ferrocd snapshot save` fetches the same database.
    for path in [&from_etcd, &from_ferrocd] {
        let ours = ferrocd_tool(&["snapshot", "status", "-w", "json", path.to_str().unwrap()]);
        assert_eq!(json(&ours), status(path), "{}", path.display());
    }
    let by_tool = dir.path().join("by-tool.db");
    ferrocd_tool(&[
        "snapshot",
        "save",
        &ferrocd.endpoint,
        by_tool.to_str().unwrap(),
    ]);
    assert_eq!(status(&by_tool), s_ferrocd);

    let restored = restore_into_etcd(&from_ferrocd).await;
    assert_eq!(view(&restored, 6), view(&ferrocd, 6));
    assert_eq!(lease_view(&restored, &lease), lease_view(&ferrocd, &lease));
    // History below the compaction is gone on both.
    let below = restored.etcdctl(&["get", "a", "--rev", "4"]);
    assert!(String::from_utf8_lossy(&below.stderr).contains("required revision has been compacted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bbolt_reader_finds_what_etcd_wrote() {
    let Some(etcd) = Server::etcd(&[]).await else {
        return;
    };
    etcdctl(&etcd, &["put", "alpha", "one"]);
    etcdctl(&etcd, &["put", "alpha", "two"]);
    etcdctl(&etcd, &["del", "alpha"]);
    let grant = etcdctl(&etcd, &["lease", "grant", "300"]);
    let lease = i64::from_str_radix(grant.split_whitespace().nth(1).unwrap(), 16).unwrap();
    etcdctl(
        &etcd,
        &["put", "--lease", &format!("{lease:x}"), "beta", "b"],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = save(&etcd, dir.path(), "etcd.db");

    let db = DbReader::open(&path).unwrap();
    db.check().unwrap();
    let mut changes = Vec::new();
    db.for_each(layout::KEY, |k, v| {
        let (rev, tombstone) = layout::parse_revision_key(k).expect("revision key");
        let kv = KeyValue::decode(v.unwrap()).unwrap();
        changes.push((rev.main, tombstone, kv.key, kv.value, kv.lease));
        Ok::<_, BoltError>(())
    })
    .unwrap();
    let expected = vec![
        (2, false, b"alpha".to_vec(), b"one".to_vec(), 0),
        (3, false, b"alpha".to_vec(), b"two".to_vec(), 0),
        (4, true, b"alpha".to_vec(), vec![], 0),
        (5, false, b"beta".to_vec(), b"b".to_vec(), lease),
    ];
    assert_eq!(changes, expected);
    let mut leases = Vec::new();
    db.for_each(layout::LEASE, |k, v| {
        let record = layout::LeaseRecord::decode(v.unwrap()).unwrap();
        leases.push((k.to_vec(), record.id, record.ttl));
        Ok::<_, BoltError>(())
    })
    .unwrap();
    assert_eq!(
        leases,
        vec![(layout::lease_key(lease).to_vec(), lease, 300)]
    );
}

/// The pids' open files that are deleted snapshot scratch files.
fn open_scratch_files(pid: u32) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|t| t.contains("/member/tmp/snapshot-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_midway_leaves_no_file_behind() {
    let ferrocd = Server::ferrocd(&[]).await;
    let mut client = ferrocd.client().await;
    // ~16 MB: far more than the transport buffers between the two.
    let value = vec![b'v'; 64 * 1024];
    for i in 0..250 {
        client
            .put(format!("k{i:04}"), value.clone(), None)
            .await
            .unwrap();
    }
    let pid = ferrocd.pid().unwrap();
    let channel = ferrocd.channel().await.unwrap();
    let mut stream = MaintenanceClient::new(channel)
        .snapshot(SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.remaining_bytes > 8 << 20, "{}", first.remaining_bytes);
    // While it streams, the file exists only as an open handle.
    assert_eq!(
        open_scratch_files(pid).len(),
        1,
        "{:?}",
        open_scratch_files(pid)
    );
    let tmp = ferrocd.data_dir().join("member").join("tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !open_scratch_files(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "snapshot file still open 10 s after the client left: {:?}",
            open_scratch_files(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    // The file is dropped as the send fails; the log line comes just after.
    while !ferrocd.log().contains("snapshot: the client went away") {
        assert!(
            Instant::now() < deadline,
            "no log of the client leaving: {}",
            ferrocd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_status_tool_refuses_damaged_files_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0xA5u8; 3 * 4096]).unwrap();
    let out = Command::new(ferrocd_bin())
        .args(["snapshot", "status", path.to_str().unwrap()])
        .output()
        .expect("ferrocd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("Error: corrupt bbolt file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_save_tool_speaks_mutual_tls() {
    let mut pki = ferrocd_e2e::pki::Pki::new("snapshot");
    let server_cert = pki.issue("server", "server");
    let client = pki.client("root");
    let flags = [
        format!("--cert-file={}", server_cert.cert.display()),
        format!("--key-file={}", server_cert.key.display()),
        format!("--trusted-ca-file={}", pki.ca().display()),
        "--client-cert-auth=true".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ferrocd = Server::start_https(Kind::Ferrocd, client.clone(), &flags).await;
    etcdctl(&ferrocd, &["put", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.db");
    let mut args = vec!["snapshot".to_string(), "save".to_string()];
    args.extend(client.etcdctl_flags());
    args.extend([ferrocd.client_url.clone(), path.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ferrocd_tool(&args);
    assert_eq!(status(&path)["revision"], 2);
}

/// Users, roles and the auth switch travel in the snapshot: etcd 3.4
/// restored from a ferrocd snapshot enforces the same permissions.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_restored_from_a_ferrocd_snapshot_keeps_its_users_and_roles() {
    if !ferrocd_e2e::require_tool("etcd") {
        return;
    }
    let ferrocd = Server::ferrocd(&["--bcrypt-cost=4"]).await;
    add_users(&ferrocd);
    for args in [
        &["put", "pub/a", "1"][..],
        &["put", "secret", "2"],
        &["auth", "enable"],
    ] {
        etcdctl(&ferrocd, args);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    etcdctl(
        &ferrocd,
        &[
            "--user=root:rootpw",
            "snapshot",
            "save",
            path.to_str().unwrap(),
        ],
    );
    let restored = restore_into_etcd(&path).await;
    let as_reader = |args: &[&str]| {
        let mut all = vec!["--user=reader:readerpw"];
        all.extend_from_slice(args);
        restored.etcdctl(&all)
    };
    let allowed = as_reader(&["get", "pub/a", "--print-value-only"]);
    assert_eq!(ok(allowed, "reader get pub/a").trim(), "1");
    assert!(
        !as_reader(&["get", "secret"]).status.success(),
        "reader read a secret"
    );
    assert!(
        !as_reader(&["put", "pub/a", "x"]).status.success(),
        "reader wrote"
    );
    assert!(
        !restored.etcdctl(&["get", "secret"]).status.success(),
        "auth was not enabled after the restore"
    );
    let root = restored.etcdctl(&["--user=root:rootpw", "get", "secret", "--print-value-only"]);
    assert_eq!(ok(root, "root get secret").trim(), "2");
}
