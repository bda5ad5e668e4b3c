//! The membership executor over gRPC against real 3-member clusters on
//! loopback, one scenario run against etcd 3.4 and against ferrocd with the
//! same assertions: 3 -> 5 -> 3, every new member added as a learner,
//! started as its own process with `--initial-cluster-state=existing` and
//! promoted once caught up, scale-down removing the highest member first,
//! which then exits on its own. The store's own rules (one learner at a
//! time, promote only in sync) judge each step, so this also checks that
//! `FakeEtcd` models them and that ferrocd keeps them as etcd does. After
//! every step all running members hold the same data: each serves a key
//! written before scaling from its own store, and the voters' HashKV at a
//! common revision is equal. The etcd run is skipped when etcd is not
//! installed, outside CI.

use std::time::{Duration, Instant};

use ferrocd_e2e::{Cluster, Kind, Server};
use ferrocd_operator::grpc::GrpcEtcd;
use ferrocd_operator::membership::{
    execute, observe_store, EtcdApi, EtcdError, MemberStep, ObservedMember, StoreView,
};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};

/// Written before scaling; every member, old and new, must serve it.
const KEY_BEFORE: &str = "scaling/before";
const VALUE_BEFORE: &str = "written by the first three members";

/// How long any one wait of this test may take.
const PATIENCE: Duration = Duration::from_secs(30);

ferrocd_e2e::on_etcd_and_ferrocd!(scale_three_to_five_and_back);

async fn scale_three_to_five_and_back(kind: Kind) {
    let mut cluster = match kind {
        Kind::Etcd => match Cluster::etcd(3, &[]).await {
            Some(cluster) => cluster,
            None => return,
        },
        Kind::Ferrocd => Cluster::ferrocd(3, &[]).await,
    };
    // Member 0 is never removed; the operator talks through the client
    // Service, which any member answers.
    let api = GrpcEtcd::new(&cluster.members[0].client_url, None).unwrap();
    let before = observe_until(&api, "3 healthy voters", |v| settled(v, 3)).await;
    assert_ne!(
        before.cluster_id, 0,
        "the store sends its cluster ID in the header"
    );
    put(&cluster.members[0], KEY_BEFORE, VALUE_BEFORE).await;
    assert_members_agree(&cluster, "before scaling").await;

    for ordinal in 3..5 {
        let new = cluster.plan_member();
        let peer_url = new.peer_url().to_string();
        let add = MemberStep::AddLearner {
            ordinal,
            peer_url: peer_url.clone(),
        };
        execute_until_accepted(&api, &add).await;
        // etcd 3.4 answers MemberAdd only once the member that took it has
        // applied the change, so its next MemberList lists the learner.
        // ferrocd answers once the leader has committed it, so a follower
        // may list the learner only a moment later, a divergence of the
        // store. The operator does not depend on either: it observes
        // again on its next reconcile.
        let view = observe_until(&api, "the learner is listed", |v| {
            member(&v.observed(), &peer_url).is_some()
        })
        .await;
        let learner = member(&view.observed(), &peer_url).cloned().unwrap();
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
            "one learner at a time (etcd 3.4's default --max-learners)"
        );

        let initial = initial_cluster(&api, &new.name).await;
        // Its own process, started with --initial-cluster-state=existing.
        cluster.start_member(new, &initial, &[]).await;
        observe_until(&api, "the learner catches up", |v| {
            member(&v.observed(), &peer_url).is_some_and(|m| m.healthy && m.caught_up)
        })
        .await;
        assert_members_agree(&cluster, &format!("learner m{ordinal} started")).await;
        execute_until_accepted(&api, &promote).await;
        let voters = ordinal as usize + 1;
        let view = observe_until(&api, "the promoted member votes", |v| settled(v, voters)).await;
        assert_eq!(view.cluster_id, before.cluster_id, "same cluster");
        assert_members_agree(&cluster, &format!("m{ordinal} promoted")).await;
    }

    for ordinal in (3..5).rev() {
        let highest = cluster.members.len() - 1;
        let peer_url = cluster.members[highest].peer_url.clone();
        let view = observe_store(&api).await.expect("store answers");
        let id = member(&view.observed(), &peer_url)
            .expect("the highest member is listed")
            .id;
        let remove = MemberStep::Remove { id, ordinal };
        if ordinal == 4 {
            // The client Service may route the step to the very member it
            // removes, which shuts itself down right after the change
            // commits: its answer may be lost. The operator only learns
            // the outcome from its next observation.
            remove_through_the_removed_member(&cluster.members[highest], &remove).await;
        } else {
            execute_until_accepted(&api, &remove).await;
        }
        let mut removed = cluster.take_member(highest);
        wait_for_exit(&mut removed).await;
        let voters = ordinal as usize;
        let view = observe_until(&api, "the member is gone", |v| settled(v, voters)).await;
        assert!(member(&view.observed(), &peer_url).is_none());
        assert_eq!(
            execute(&api, &remove).await,
            Err(EtcdError::MemberNotFound),
            "a repeated remove is refused, not applied twice"
        );
        assert_members_agree(&cluster, &format!("m{ordinal} removed")).await;
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

/// Runs `step`, retrying while the store refuses it for a reason that
/// passes: a learner still catching up, or etcd's health window.
async fn execute_until_accepted(api: &GrpcEtcd, step: &MemberStep) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match execute(api, step).await {
            Ok(()) => return,
            Err(EtcdError::LearnerNotReady) if Instant::now() < deadline => {}
            // etcd (--strict-reconfig-check, on by default) answers this,
            // with the Unavailable code, until every voter has been
            // connected for 5 s, so right after a member starts. ferrocd
            // has no such window: it answers this only while a voter is
            // unreachable, which this scenario never has.
            Err(EtcdError::Unavailable(text))
                if text.contains("unhealthy cluster") && Instant::now() < deadline => {}
            Err(error) => panic!("{step:?}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends a Remove step to the client URL of the member it removes. The
/// answer is either success or lost with the member, never a refusal.
async fn remove_through_the_removed_member(target: &Server, remove: &MemberStep) {
    let api = GrpcEtcd::new(&target.client_url, None).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match execute(&api, remove).await {
            Ok(()) => return,
            Err(EtcdError::Unavailable(text)) if text.contains("unhealthy cluster") => {
                assert!(Instant::now() < deadline, "{remove:?}: {text}");
            }
            // The member stopped before it answered.
            Err(EtcdError::Unavailable(_)) => return,
            Err(error) => panic!("{remove:?} through {}: {error}", target.name),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until a removed member's process has exited on its own, as etcd's
/// does, so that the operator never sees it again.
async fn wait_for_exit(removed: &mut Server) {
    let pid = removed.pid().expect("the removed member was running");
    let deadline = Instant::now() + PATIENCE;
    while !has_exited(pid) {
        assert!(
            Instant::now() < deadline,
            "removed member {} still runs after 30 s; log:\n{}",
            removed.name,
            removed.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Reaps it: a signal to an exited process changes nothing.
    let status = removed.terminate();
    assert!(
        status.success(),
        "removed member {} exited with {status}; log:\n{}",
        removed.name,
        removed.log()
    );
}

/// Whether process `pid` has exited. The harness reaps its children only
/// when told to, so an exited member lingers as a zombie (state `Z`).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Observes the store until `ready` holds for the view.
async fn observe_until(
    api: &GrpcEtcd,
    what: &str,
    ready: impl Fn(&StoreView) -> bool,
) -> StoreView {
    let deadline = Instant::now() + PATIENCE;
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

/// Every running member of `cluster` has applied a fresh write and serves
/// [`KEY_BEFORE`] from its own store; every voter hashes its keyspace up to
/// that write's revision to the same value as the others.
async fn assert_members_agree(cluster: &Cluster, after: &str) {
    let marker = format!("scaling/{after}");
    let revision = put(&cluster.members[0], &marker, "done").await;
    let mut hashes = Vec::new();
    for m in &cluster.members {
        let deadline = Instant::now() + PATIENCE;
        while read_serializable(m, &marker).await != Ok(Some("done".into())) {
            assert!(
                Instant::now() < deadline,
                "{after}: {} did not apply revision {revision} in 30 s",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            read_serializable(m, KEY_BEFORE).await,
            Ok(Some(VALUE_BEFORE.into())),
            "{after}: {} serves the key written before scaling",
            m.name
        );
        // etcd 3.4 serves a learner only Status and serializable ranges.
        let learner = m.status().await.expect("status").is_learner;
        if !learner {
            hashes.push((m.name.as_str(), hash_kv(m, revision).await));
        }
    }
    assert!(
        hashes.iter().all(|(_, h)| *h == hashes[0].1),
        "{after}: HashKV (hash, compact revision) at revision {revision} differs: {hashes:?}"
    );
}

/// Puts `key` through `member`; returns the revision of the write.
async fn put(member: &Server, key: &str, value: &str) -> i64 {
    let mut kv = KvClient::new(member.channel().await.expect("connect"));
    let response = kv
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("put {key} through {}: {e}", member.name))
        .into_inner();
    response.header.expect("put header").revision
}

/// The value of `key` in `member`'s own store (a serializable range, which
/// learners serve too).
async fn read_serializable(member: &Server, key: &str) -> Result<Option<String>, String> {
    let mut kv = KvClient::new(member.channel().await?);
    let response = kv
        .range(RangeRequest {
            key: key.into(),
            serializable: true,
            ..Default::default()
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// `member`'s HashKV at `revision`: the hash and the compact revision.
async fn hash_kv(member: &Server, revision: i64) -> (u32, i64) {
    let channel = member.channel().await.expect("connect");
    let response = MaintenanceClient::new(channel)
        .hash_kv(HashKvRequest { revision })
        .await
        .unwrap_or_else(|e| panic!("HashKV at {revision} on {}: {e}", member.name))
        .into_inner();
    (response.hash, response.compact_revision)
}
