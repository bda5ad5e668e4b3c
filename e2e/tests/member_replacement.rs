//! A member whose disk was lost comes back on an empty data directory: it
//! must never take over the identity of the member it replaces while that
//! member is still in the cluster (its data would be gone while the cluster
//! counts it), and it joins once the old member is removed and a new one
//! added at the same peer URL, as an operator replaces a member. A member
//! of a new cluster that never started, though, may start late on an empty
//! directory with `--initial-cluster-state existing` (as an operator's
//! slow pod does once the others formed the cluster), on etcd as on
//! ferrocd.

use std::time::{Duration, Instant};

use ferrocd_e2e::{require_tool, Cluster, Kind};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_member_on_an_empty_disk_joins_only_as_its_replacement() {
    let mut cluster = Cluster::ferrocd(3, &[]).await;
    for i in 0..20 {
        let put = cluster.etcdctl(&["put", &format!("k{i}"), "v"]);
        assert!(put.status.success(), "{}", text(&put));
    }
    let leader = cluster.leader().await;
    let lost = (leader + 1) % 3;
    let old_id = cluster.member_id(lost).await;
    let peer_url = cluster.members[lost].peer_url.clone();
    let name = cluster.members[lost].name.clone();

    // The disk is lost; the member starts again on an empty one.
    cluster.members[lost].kill9();
    std::fs::remove_dir_all(cluster.members[lost].data_dir()).unwrap();
    cluster.members[lost].set_flag("--initial-cluster-state", "existing");
    cluster.members[lost].launch();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = cluster.members[lost].exit_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a member on an empty disk kept running as {old_id:x}: {}",
            cluster.members[lost].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = cluster.members[lost].log();
    assert!(log.contains("cannot take its place"), "{log}");
    cluster.members[lost].kill9();

    // Replaced as an operator does: removed, then added again at the same
    // peer URL (as a learner), then started.
    let others: Vec<String> = (0..3)
        .filter(|&i| i != lost)
        .map(|i| cluster.members[i].endpoint.clone())
        .collect();
    let others = others.join(",");
    let remove = ferrocd_e2e::etcdctl(&others, &["member", "remove", &format!("{old_id:x}")], None);
    assert!(remove.status.success(), "{}", text(&remove));
    let add = ferrocd_e2e::etcdctl(
        &others,
        &[
            "member",
            "add",
            &name,
            "--learner",
            &format!("--peer-urls={peer_url}"),
        ],
        None,
    );
    assert!(add.status.success(), "{}", text(&add));
    cluster.members[lost].restart().await;
    let new_id = cluster.member_id(lost).await;
    assert_ne!(
        new_id, old_id,
        "the replacement reused the removed member's id"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got =
            cluster.members[lost].etcdctl(&["get", "k19", "--print-value-only", "--consistency=s"]);
        if String::from_utf8_lossy(&got.stdout).trim() == "v" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replacement did not catch up: {}",
            text(&got)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_late_initial_member_joins_as_existing(kind: Kind) {
    let mut cluster = Cluster::prepare(kind, 3, &[]);
    for i in 0..2 {
        cluster.members[i].launch();
    }
    for i in 0..2 {
        cluster.members[i].wait_ready().await;
    }
    let put = cluster.members[0].etcdctl(&["put", "before", "v"]);
    assert!(put.status.success(), "{}", text(&put));
    let late = &mut cluster.members[2];
    late.set_flag("--initial-cluster-state", "existing");
    late.launch();
    late.wait_ready().await;
    let put = late.etcdctl(&["put", "after", "w"]);
    assert!(put.status.success(), "{kind:?}: {}", text(&put));
    let got = late.etcdctl(&["get", "before", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v", "{kind:?}");
    let list = late.etcdctl(&["member", "list"]);
    let list = text(&list);
    assert_eq!(
        list.lines().filter(|l| l.contains(", started, ")).count(),
        3,
        "{kind:?}: {list}"
    );
}

#[tokio::test]
async fn a_late_initial_member_joins_on_an_empty_disk() {
    a_late_initial_member_joins_as_existing(Kind::Ferrocd).await;
}

#[tokio::test]
async fn a_late_initial_member_joins_on_an_empty_disk_on_etcd_too() {
    if !require_tool("etcd") {
        return;
    }
    a_late_initial_member_joins_as_existing(Kind::Etcd).await;
}
