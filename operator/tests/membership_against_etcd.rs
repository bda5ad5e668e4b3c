//! The membership executor over gRPC against a real 3-member etcd 3.4 on
//! loopback: 3 -> 5 -> 3, every new member added as a learner, started and
//! promoted once caught up, scale-down removing the highest member first.
//! etcd's own rules (one learner at a time, promote only in sync, quorum on
//! removal) judge each step, so this also checks that `FakeEtcd` models
//! them. Skipped when etcd is not installed, outside CI.

use std::time::{Duration, Instant};

use ferrocd_e2e::Cluster;
use ferrocd_operator::grpc::GrpcEtcd;
use ferrocd_operator::membership::{
    execute, observe_store, EtcdApi, EtcdError, MemberStep, ObservedMember, StoreView,
};

/// Runs `step`, retrying while etcd refuses it for a reason that passes:
/// its five-second health window after a member starts, or a learner still
/// catching up.
async fn execute_until_accepted(api: &GrpcEtcd, step: &MemberStep) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match execute(api, step).await {
            Ok(()) => return,
            Err(EtcdError::LearnerNotReady) if Instant::now() < deadline => {}
            // etcd answers this with the Unavailable code.
            Err(EtcdError::Unavailable(text))
                if text.contains("unhealthy cluster") && Instant::now() < deadline => {}
            Err(error) => panic!("{step:?}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Observes the store until `ready` holds for the view, for up to 30 s.
async fn observe_until(
    api: &GrpcEtcd,
    what: &str,
    ready: impl Fn(&StoreView) -> bool,
) -> StoreView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(view) = observe_store(api).await {
            if ready(&view) {
                return view;
            }
        }
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn member<'a>(view: &'a [ObservedMember], peer_url: &str) -> Option<&'a ObservedMember> {
    view.iter().find(|m| m.peer_url == peer_url)
}

/// `--initial-cluster` for a member that was just added: every member's
/// `name=peer URL`, the new (still nameless) one under `name`.
async fn initial_cluster(api: &GrpcEtcd, name: &str) -> String {
    let list = api.member_list().await.expect("member list");
    list.members
        .iter()
        .map(|m| {
            let n = if m.name.is_empty() { name } else { &m.name };
            format!("{n}={}", m.peer_urls[0])
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every member a healthy voter, `voters` of them.
fn settled(view: &StoreView, voters: usize) -> bool {
    let observed = view.observed();
    observed.len() == voters && observed.iter().all(|m| !m.is_learner && m.healthy)
}

#[tokio::test]
async fn executor_scales_etcd_from_three_to_five_and_back_one_step_at_a_time() {
    let Some(mut cluster) = Cluster::etcd(3, &[]).await else {
        return;
    };
    // Member 0 is never removed; the operator talks through the client
    // Service, which any member answers.
    let api = GrpcEtcd::new(&cluster.members[0].client_url).unwrap();
    let before = observe_until(&api, "3 healthy voters", |v| settled(v, 3)).await;
    assert_ne!(
        before.cluster_id, 0,
        "etcd sends its cluster ID in the header"
    );

    for ordinal in 3..5 {
        let new = cluster.plan_member();
        let peer_url = new.peer_url().to_string();
        let add = MemberStep::AddLearner {
            ordinal,
            peer_url: peer_url.clone(),
        };
        execute_until_accepted(&api, &add).await;
        let view = observe_store(&api).await.expect("store answers");
        let learner = member(&view.observed(), &peer_url)
            .cloned()
            .expect("the learner is listed");
        assert!(learner.is_learner && !learner.healthy, "added, not started");
        let promote = MemberStep::Promote {
            id: learner.id,
            ordinal,
        };
        assert_eq!(
            execute(&api, &promote).await,
            Err(EtcdError::LearnerNotReady),
            "a learner that has not started is not in sync"
        );
        let second = MemberStep::AddLearner {
            ordinal: ordinal + 1,
            peer_url: "http://127.0.0.1:1".into(),
        };
        assert_eq!(
            execute(&api, &second).await,
            Err(EtcdError::TooManyLearners),
            "etcd 3.4 allows one learner"
        );

        let initial = initial_cluster(&api, &new.name).await;
        cluster.start_member(new, &initial, &[]).await;
        observe_until(&api, "the learner catches up", |v| {
            member(&v.observed(), &peer_url).is_some_and(|m| m.healthy && m.caught_up)
        })
        .await;
        execute_until_accepted(&api, &promote).await;
        let voters = ordinal as usize + 1;
        let view = observe_until(&api, "the promoted member votes", |v| settled(v, voters)).await;
        assert_eq!(view.cluster_id, before.cluster_id, "same cluster");
    }

    for ordinal in (3..5).rev() {
        let highest = cluster.members.len() - 1;
        let peer_url = cluster.members[highest].peer_url.clone();
        let view = observe_store(&api).await.expect("store answers");
        let id = member(&view.observed(), &peer_url)
            .expect("the highest member is listed")
            .id;
        execute_until_accepted(&api, &MemberStep::Remove { id, ordinal }).await;
        drop(cluster.take_member(highest));
        let voters = ordinal as usize;
        let view = observe_until(&api, "the member is gone", |v| settled(v, voters)).await;
        assert!(member(&view.observed(), &peer_url).is_none());
    }

    let after = observe_until(&api, "3 healthy voters", |v| settled(v, 3)).await;
    assert_eq!(after.cluster_id, before.cluster_id, "same cluster");
    let leader = after.leader().expect("a leader");
    assert!(after.members.iter().any(|(m, _)| m.id == leader));
    let names: Vec<&str> = after.members.iter().map(|(m, _)| m.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(
        names.iter().all(|n| ["m0", "m1", "m2"].contains(n)),
        "{names:?}"
    );
}
