//! `ferrocd snapshot restore`, judged against etcd 3.4: a real etcd's
//! snapshot becomes a 3-member ferrocd cluster that serves the same keys at
//! every revision, the same leases, users and roles; a snapshot of that
//! cluster goes back into etcd with `etcdctl snapshot restore` and etcd
//! serves the same again. Bad files and flags get etcdctl's errors, and a
//! failed restore leaves nothing behind.

use std::path::Path;
use std::process::{Command, Output};

use ferrocd::ids;
use ferrocd_e2e::snapshots::*;
use ferrocd_e2e::{ferrocd_bin, require_tool, Cluster, Kind, Server};

fn restore_args<'a>(
    snapshot: &'a str,
    name: &'a str,
    data_dir: &'a str,
    cluster: &'a str,
    token: &'a str,
    peer_url: &'a str,
) -> Vec<&'a str> {
    vec![
        "snapshot",
        "restore",
        snapshot,
        "--name",
        name,
        "--data-dir",
        data_dir,
        "--initial-cluster",
        cluster,
        "--initial-cluster-token",
        token,
        "--initial-advertise-peer-urls",
        peer_url,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_snapshot_becomes_a_ferrocd_cluster_and_goes_back_to_etcd() {
    let Some(etcd) = Server::etcd(&[]).await else {
        return;
    };
    let lease = write_script(&etcd);
    add_users(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let from_etcd = save(&etcd, dir.path(), "etcd.db");
    let revision = status(&from_etcd)["revision"].as_i64().unwrap();

    let mut cluster = Cluster::prepare(Kind::Ferrocd, 3, &[]);
    let initial = cluster.initial_cluster();
    for m in &cluster.members {
        let data_dir = m.data_dir().display().to_string();
        ferrocd_tool(&restore_args(
            from_etcd.to_str().unwrap(),
            &m.name,
            &data_dir,
            &initial,
            cluster.token(),
            &m.peer_url,
        ));
    }
    cluster.launch_all().await;

    // The new cluster has the ids etcd's rules give its flags.
    let member_ids: Vec<u64> = cluster
        .members
        .iter()
        .map(|m| ids::member_id(std::slice::from_ref(&m.peer_url), cluster.token()))
        .collect();
    for (i, id) in member_ids.iter().enumerate() {
        assert_eq!(cluster.member_id(i).await, *id);
    }
    let list = json(&ok(
        cluster.etcdctl(&["member", "list", "-w", "json"]),
        "member list",
    ));
    assert_eq!(
        list["header"]["cluster_id"].as_u64(),
        Some(ids::cluster_id(&member_ids))
    );
    assert_eq!(list["members"].as_array().map(Vec::len), Some(3));

    // Every member serves etcd's history, leases, users and roles, with
    // the key index the restore checkpointed.
    for m in &cluster.members {
        assert!(
            m.log().contains("key index loaded from its checkpoint"),
            "{}:\n{}",
            m.name,
            m.log()
        );
        same_history(&etcd, m, revision);
        assert_eq!(
            lease_view(m, &lease),
            lease_view(&etcd, &lease),
            "{}",
            m.name
        );
        assert_eq!(auth_view(m), auth_view(&etcd), "{}", m.name);
    }
    // The next write gets the next revision on both.
    let put_rev = |s: &Server| {
        json(&etcdctl(s, &["put", "after-restore", "x", "-w", "json"]))["header"]["revision"]
            .clone()
    };
    assert_eq!(put_rev(&cluster.members[1]), put_rev(&etcd));
    assert_eq!(put_rev(&etcd), revision + 2);

    // And back: ferrocd's snapshot, restored by etcdctl, serves the same.
    let from_ferrocd = dir.path().join("ferrocd.db");
    ferrocd_tool(&[
        "snapshot",
        "save",
        &cluster.members[0].endpoint,
        from_ferrocd.to_str().unwrap(),
    ]);
    let back = restore_into_etcd(&from_ferrocd).await;
    same_history(&back, &cluster.members[0], revision + 1);
    assert_eq!(lease_view(&back, &lease), lease_view(&etcd, &lease));
    assert_eq!(auth_view(&back), auth_view(&etcd));
}

/// ferrocd's and then etcdctl's `snapshot restore` on the same arguments.
/// ferrocd's runs first: etcdctl leaves a partial directory behind.
fn both(args: &[&str], check_left: impl FnOnce()) -> (Output, Output) {
    let ferrocd = Command::new(ferrocd_bin())
        .args(args)
        .output()
        .expect("ferrocd");
    check_left();
    let etcdctl = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("etcdctl");
    (etcdctl, ferrocd)
}

/// The `Error: ...` line a failed command printed.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("no error line: {}", String::from_utf8_lossy(&out.stderr)))
        .to_string()
}

/// Nothing named `name` (nor a scratch directory for it) was left in `dir`.
fn left_nothing(dir: &Path, name: &str) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_snapshots_and_flags_get_etcdctls_errors_and_leave_nothing_behind() {
    if !require_tool("etcdctl") {
        return;
    }
    let server = Server::ferrocd(&[]).await;
    etcdctl(&server, &["put", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let good = save(&server, dir.path(), "good.db");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let flipped = dir.path().join("flipped.db");
    let mut damaged = bytes.clone();
    damaged[5000] ^= 0xff;
    std::fs::write(&flipped, &damaged).unwrap();
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();

    let target = |name: &str| dir.path().join(name).display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                good.display().to_string(),
                "--data-dir".into(),
                existing.display().to_string(),
            ],
            "existing",
        ),
        (
            vec![
                truncated.display().to_string(),
                "--data-dir".into(),
                target("t1"),
            ],
            "t1",
        ),
        (
            vec![
                flipped.display().to_string(),
                "--data-dir".into(),
                target("t2"),
            ],
            "t2",
        ),
        (
            vec![
                good.display().to_string(),
                "--data-dir".into(),
                target("t3"),
                "--name".into(),
                "nobody".into(),
            ],
            "t3",
        ),
    ];
    for (args, name) in cases {
        let mut all = vec!["snapshot".to_string(), "restore".to_string()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (etcdctl_out, ferrocd_out) = both(&all, || {
            if name != "existing" {
                left_nothing(dir.path(), name);
            }
        });
        assert_eq!(
            error_line(&ferrocd_out),
            error_line(&etcdctl_out),
            "{all:?}"
        );
    }

    // A file that is not a database, with a valid trailer skipped: a clear
    // error, nothing written.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0xA5u8; 3 * 4096]).unwrap();
    let out = Command::new(ferrocd_bin())
        .args([
            "snapshot",
            "restore",
            garbage.to_str().unwrap(),
            "--skip-hash-check",
        ])
        .args(["--data-dir", &target("t4")])
        .output()
        .unwrap();
    assert!(
        error_line(&out).starts_with("Error: corrupt bbolt file"),
        "{}",
        error_line(&out)
    );
    left_nothing(dir.path(), "t4");

    // The good file restores, once.
    ferrocd_tool(&[
        "snapshot",
        "restore",
        good.to_str().unwrap(),
        "--data-dir",
        &target("t5"),
    ]);
    assert!(dir.path().join("t5/member/identity.json").exists());
}
