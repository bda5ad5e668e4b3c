//! The network faults of the fault runs do what they claim, on a real
//! 3-member ferrocd cluster: a leader partitioned from the rest loses
//! them (they elect another, it can no longer serve a linearizable read),
//! and after healing it rejoins and serves again.

use std::time::{Duration, Instant};

use ferrocd_e2e::netfault::NetFaults;
use ferrocd_e2e::{in_ci, Cluster, Kind, Server};

/// The leader member `m` reports, if it answers.
async fn leader_seen_by(m: &Server) -> Option<u64> {
    let s = m.status().await.ok()?;
    (s.leader != 0).then_some(s.leader)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_leader_loses_the_cluster_and_rejoins_when_healed() {
    if let Err(e) = NetFaults::available() {
        assert!(!in_ci(), "network faults are required in CI: {e}");
        eprintln!("skipping: {e}");
        return;
    }
    let mut net = NetFaults::new().unwrap();
    let mut cluster = Cluster::prepare(Kind::Ferrocd, 3, &[]);
    for m in &mut cluster.members {
        m.set_cgroup(net.procs_file(&m.name).unwrap());
    }
    cluster.launch_all().await;
    let old = cluster.leader().await;
    let old_id = cluster.member_id(old).await;
    let old_name = cluster.members[old].name.clone();
    for (j, other) in cluster.members.iter().enumerate() {
        if j != old {
            net.cut(&old_name, &other.ports()).unwrap();
            net.cut(&other.name, &cluster.members[old].ports()).unwrap();
        }
    }
    assert!(net.is_cut());

    // The other two elect a leader among themselves.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut seen = Vec::new();
        for (j, m) in cluster.members.iter().enumerate() {
            if j != old {
                seen.push(leader_seen_by(m).await);
            }
        }
        if seen[0].is_some() && seen[0] == seen[1] && seen[0] != Some(old_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader behind the partition: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The cut-off member cannot confirm a read with a quorum.
    let read = cluster.members[old].etcdctl(&["get", "k", "--command-timeout=2s"]);
    assert!(
        !read.status.success(),
        "a partitioned member served a linearizable read: {}",
        String::from_utf8_lossy(&read.stdout)
    );
    // Writes go on through the majority.
    let majority = (old + 1) % 3;
    let put = cluster.members[majority].etcdctl(&["put", "k", "during"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );

    net.heal().unwrap();
    assert!(!net.is_cut());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let read = cluster.members[old].etcdctl(&["get", "k", "--print-value-only"]);
        if String::from_utf8_lossy(&read.stdout).trim() == "during" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healed member did not catch up: {}",
            String::from_utf8_lossy(&read.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.leader().await;
}
