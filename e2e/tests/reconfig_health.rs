//! etcd's strict reconfiguration checks count a voter as up only once the
//! member asked has been connected to it for 5 s (`HealthInterval`): right
//! after a follower restarts, adding a voter or removing another follower
//! is refused with "etcdserver: unhealthy cluster", and allowed again once
//! the restarted member has been back for 5 s. Run against etcd 3.4
//! (`*_on_etcd`) and ferrocd (`*_on_ferrocd`) with the same assertions.

use std::time::{Duration, Instant};

use ferrocd_e2e::{Cluster, Kind};

const UNHEALTHY: &str = "etcdserver: unhealthy cluster";

fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl runs")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn reconfigurations_wait_until_a_restarted_voter_has_been_up_for_5_s(kind: Kind) {
    let Some(mut cluster) = Cluster::of_kind_with_etcdctl(kind, 3, &[]).await else {
        return;
    };
    // Every member connected to every other for longer than 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (restarted, other) = (followers[0], followers[1]);
    let other_id = format!("{:x}", cluster.member_id(other).await);
    let endpoint = cluster.members[leader].endpoint.clone();

    cluster.members[restarted].kill9();
    cluster.members[restarted].restart().await;
    let back = Instant::now();

    let remove = etcdctl(&endpoint, &["member", "remove", &other_id]);
    assert!(
        !remove.status.success() && text(&remove).contains(UNHEALTHY),
        "{kind:?}: removing a follower {:?} after another restarted: {}",
        back.elapsed(),
        text(&remove)
    );
    let add = etcdctl(
        &endpoint,
        &["member", "add", "new", "--peer-urls=http://127.0.0.1:1"],
    );
    assert!(
        !add.status.success() && text(&add).contains(UNHEALTHY),
        "{kind:?}: adding a voter {:?} after a member restarted: {}",
        back.elapsed(),
        text(&add)
    );
    assert!(
        back.elapsed() < Duration::from_secs(4),
        "{kind:?}: the refusals took until {:?} after the restart; they prove nothing past 5 s",
        back.elapsed()
    );

    // Once it has been back for 5 s, the removal goes through.
    let removed = loop {
        let out = etcdctl(&endpoint, &["member", "remove", &other_id]);
        if out.status.success() {
            break back.elapsed();
        }
        assert!(
            text(&out).contains(UNHEALTHY) && back.elapsed() < Duration::from_secs(15),
            "{kind:?}: removal {:?} after the restart: {}",
            back.elapsed(),
            text(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{kind:?}: the removal was allowed {removed:?} after the restart");
    assert!(
        removed >= Duration::from_secs(3),
        "{kind:?}: allowed after {removed:?}"
    );
    let list = etcdctl(&endpoint, &["member", "list"]);
    assert_eq!(text(&list).lines().count(), 2, "{}", text(&list));
}

ferrocd_e2e::on_etcd_and_ferrocd!(
    reconfigurations_wait_until_a_restarted_voter_has_been_up_for_5_s
);
