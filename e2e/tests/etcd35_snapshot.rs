//! Snapshots move both ways between etcd 3.5 and ferrocd, as between etcd
//! 3.4 and ferrocd (`snapshot_restore.rs`): a snapshot saved by etcd 3.5's
//! etcdctl reads the same in `etcdutl snapshot status` and `ferrocd
//! snapshot status`, restores into a ferrocd that serves etcd's history,
//! leases, users and roles; a snapshot of that ferrocd reads the same in
//! etcdutl and restores into an etcd 3.5 that serves the same again.

use std::path::Path;
use std::process::Command;

use ferrocd_e2e::etcd35;
use ferrocd_e2e::snapshots::*;
use ferrocd_e2e::{Kind, Server};
use serde_json::Value;

/// What both tools' `snapshot status -w json` must agree on.
fn status_fields(v: &Value) -> [Value; 4] {
    ["hash", "revision", "totalKey", "totalSize"].map(|f| v[f].clone())
}

fn both_statuses(bin: &Path, file: &Path) -> (Value, Value) {
    let file = file.to_str().unwrap();
    let theirs = json(&etcd35::etcdutl(
        bin,
        &["snapshot", "status", file, "-w", "json"],
    ));
    let ours = json(&ferrocd_tool(&["snapshot", "status", file, "-w", "json"]));
    (theirs, ours)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_move_both_ways_between_etcd_35_and_ferrocd() {
    let Some(bin) = etcd35::dir() else {
        return;
    };
    let mut etcd = etcd35::prepare(&bin, &[]);
    etcd.launch();
    etcd.wait_ready().await;
    let version = json(&etcdctl(&etcd, &["endpoint", "status", "-w", "json"]));
    assert_eq!(version[0]["Status"]["version"], "3.5.1", "{version}");
    let lease = write_script(&etcd);
    add_users(&etcd);

    // Saved by etcd 3.5's own etcdctl.
    let dir = tempfile::tempdir().unwrap();
    let from_etcd = dir.path().join("etcd35.db");
    ok(
        Command::new(bin.join("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &etcd.endpoint,
                "snapshot",
                "save",
                from_etcd.to_str().unwrap(),
            ])
            .output()
            .expect("etcdctl 3.5"),
        "etcdctl 3.5 snapshot save",
    );
    let (theirs, ours) = both_statuses(&bin, &from_etcd);
    assert_eq!(
        status_fields(&ours),
        status_fields(&theirs),
        "{ours} / {theirs}"
    );
    let revision = theirs["revision"].as_i64().unwrap();

    // Into ferrocd.
    let mut ferrocd = Server::prepare_https(Kind::Ferrocd, None, &[]);
    let args = restore_args(&from_etcd, &ferrocd);
    ferrocd_tool(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ferrocd.launch();
    ferrocd.wait_ready().await;
    same_history(&etcd, &ferrocd, revision);
    assert_eq!(lease_view(&ferrocd, &lease), lease_view(&etcd, &lease));
    assert_eq!(auth_view(&ferrocd), auth_view(&etcd));
    let put_rev = |s: &Server| {
        json(&etcdctl(s, &["put", "after-restore", "x", "-w", "json"]))["header"]["revision"]
            .clone()
    };
    assert_eq!(put_rev(&ferrocd), put_rev(&etcd));

    // And back into etcd 3.5.
    let from_ferrocd = dir.path().join("ferrocd.db");
    ferrocd_tool(&[
        "snapshot",
        "save",
        &ferrocd.endpoint,
        from_ferrocd.to_str().unwrap(),
    ]);
    let (theirs, ours) = both_statuses(&bin, &from_ferrocd);
    assert_eq!(
        status_fields(&ours),
        status_fields(&theirs),
        "{ours} / {theirs}"
    );
    assert_eq!(theirs["revision"].as_i64(), Some(revision + 1));
    let back = etcd35::restore_into(&bin, &from_ferrocd).await;
    same_history(&back, &ferrocd, revision + 1);
    assert_eq!(lease_view(&back, &lease), lease_view(&etcd, &lease));
    assert_eq!(auth_view(&back), auth_view(&etcd));
}
