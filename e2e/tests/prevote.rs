//! Pre-vote, against etcd 3.4 side by side.
//!
//! A follower cut off from the others while it runs must not raise the
//! term and depose the leader when it is back: with pre-vote (etcd's
//! `--pre-vote`, ferrocd's default) it campaigns only once a quorum agrees
//! there is no leader; without it, ferrocd loses the term.
//!
//! A follower restarted while the
//! other members cannot open connections to it (a Kubernetes pod whose new
//! address is not yet in DNS; here their traffic to its ports is dropped)
//! must not depose the leader. etcd keeps leading: its leader also sends
//! over the streams the restarted member dials to it. ferrocd's leader
//! dials every member, so a ferrocd member holds its campaign while a
//! quorum reports a live leader (`--pre-vote`, the default): the leader
//! keeps its term. With `--pre-vote=false` the restarted member's
//! campaigns raise the term and the leader steps down once it reaches the
//! member: what the check would catch.

use std::time::{Duration, Instant};

use ferrocd_e2e::netfault::NetFaults;
use ferrocd_e2e::{in_ci, require_tool, Cluster, Kind};

/// Leader and term before and after the restart, as the leader saw them.
#[derive(Debug, PartialEq)]
struct Seen {
    leader: u64,
    term: u64,
}

/// What happens to a follower of a 3-member cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Restarted while the others cannot reach it.
    Restart,
    /// Cut off from the others, both ways, while it runs.
    CutOff,
}

/// Applies `fault` to a follower of a 3-member cluster of `kind` (members
/// get `extra`), keeps it so for 3 s (three election timeouts), lets it be
/// reached again and returns what the original leader reports before and
/// once the member is back.
async fn fault_follower(kind: Kind, fault: Fault, extra: &[&str]) -> Option<(Seen, Seen)> {
    if let Err(e) = NetFaults::available() {
        assert!(!in_ci(), "network faults are required in CI: {e}");
        eprintln!("skipping: {e}");
        return None;
    }
    if kind == Kind::Etcd && !require_tool("etcd") {
        return None;
    }
    let mut net = NetFaults::new().unwrap();
    let mut cluster = Cluster::prepare(kind, 3, extra);
    for m in &mut cluster.members {
        m.set_cgroup(net.procs_file(&m.name).unwrap());
    }
    cluster.launch_all().await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let status = cluster.members[leader].status().await.unwrap();
    let before = Seen {
        leader: status.leader,
        term: status.raft_term,
    };

    if fault == Fault::Restart {
        cluster.members[follower].kill9();
    }
    let cut_off = cluster.members[follower].ports();
    for (i, m) in cluster.members.iter().enumerate() {
        if i != follower {
            net.cut(&m.name, &cut_off).unwrap();
            if fault == Fault::CutOff {
                let name = cluster.members[follower].name.clone();
                net.cut(&name, &m.ports()).unwrap();
            }
        }
    }
    if fault == Fault::Restart {
        cluster.members[follower].launch();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    net.heal().unwrap();

    // Back: the restarted member knows a leader and serves.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let back = cluster.members[follower].status().await;
        if back.is_ok_and(|s| s.leader != 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: the member did not rejoin after {fault:?}; log:\n{}",
            cluster.members[follower].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once settled (a deposed leader's election is over), what the
    // original leader reports.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = cluster.members[leader].status().await;
        if let Some(s) = s.as_ref().ok().filter(|s| s.leader != 0) {
            break Seen {
                leader: s.leader,
                term: s.raft_term,
            };
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: no leader after the rejoin: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("{kind:?} {fault:?} {extra:?}: before {before:?}, after {after:?}");
    Some((before, after))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_member_the_leader_cannot_dial_leaves_it_leading() {
    for kind in [Kind::Etcd, Kind::Ferrocd] {
        let Some((before, after)) = fault_follower(kind, Fault::Restart, &[]).await else {
            return;
        };
        assert_eq!(
            before, after,
            "{kind:?}: the leader lost its term to a restarted member"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_pre_vote_the_restarted_member_deposes_the_leader() {
    let Some((before, after)) =
        fault_follower(Kind::Ferrocd, Fault::Restart, &["--pre-vote=false"]).await
    else {
        return;
    };
    assert!(
        after.term > before.term,
        "the term did not rise: before {before:?}, after {after:?}"
    );
}

/// A running follower cut off from the others: with pre-vote (etcd 3.4's
/// `--pre-vote`, ferrocd's default) it does not campaign without a
/// quorum's agreement, so when it is back the leader keeps its term.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_cut_off_for_a_while_leaves_the_leader_leading() {
    for (kind, extra) in [(Kind::Etcd, &["--pre-vote"][..]), (Kind::Ferrocd, &[])] {
        let Some((before, after)) = fault_follower(kind, Fault::CutOff, extra).await else {
            return;
        };
        assert_eq!(
            before, after,
            "{kind:?}: the leader lost its term to a follower that was cut off"
        );
    }
}

/// Without pre-vote the cut-off follower's campaigns raise the term
/// (ferrocd with `--pre-vote=false`): what the check above would catch.
#[tokio::test(flavor = "multi_thread")]
async fn without_pre_vote_a_follower_cut_off_deposes_the_leader() {
    let Some((before, after)) =
        fault_follower(Kind::Ferrocd, Fault::CutOff, &["--pre-vote=false"]).await
    else {
        return;
    };
    assert!(
        after.term > before.term,
        "the term did not rise: before {before:?}, after {after:?}"
    );
}
