//! `--force-new-cluster`: a three-member cluster loses two members with
//! their data (quorum lost for good); the survivor restarts with the flag,
//! serves every acknowledged key as the only member, takes writes, and the
//! cluster grows back to three through learners. Runs against etcd 3.4
//! and ferrocd with the same assertions, then checks where ferrocd differs
//! on purpose: a later start with the flag still set keeps the membership.

use std::time::{Duration, Instant};

use ferrocd_e2e::{require_tool, Cluster, Kind, Server};
use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{MemberListRequest, MemberPromoteRequest, RangeRequest};
use serde_json::Value;

const KEYS: usize = 40;

/// Ids of the members `etcdctl member list` shows through `member`, and
/// whether each is a learner.
fn member_list(member: &Server) -> Vec<(u64, bool)> {
    let out = member.etcdctl(&["member", "list", "-w", "json"]);
    assert!(
        out.status.success(),
        "member list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("member list JSON");
    v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().expect("ID"),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The keys under `k/` that `member` serves (serializably: a member just
/// promoted answers from what it applied).
async fn keys(member: &Server) -> Vec<String> {
    let mut kv = KvClient::new(member.channel().await.expect("connect"));
    let resp = kv
        .range(RangeRequest {
            key: b"k/".to_vec(),
            range_end: b"k0".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// Waits until every running member has applied up to `revision`.
async fn all_applied(cluster: &Cluster, revision: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for m in &cluster.members {
        loop {
            let rev = m
                .status()
                .await
                .ok()
                .and_then(|s| s.header)
                .map(|h| h.revision);
            if rev >= Some(revision) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} stuck at revision {rev:?}",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Adds a learner, waits for it to catch up and promotes it; its index.
async fn grow(cluster: &mut Cluster) -> usize {
    let (i, id) = cluster.add_member(true, &[]).await;
    let mut c = ClusterClient::new(cluster.members[0].channel().await.expect("connect"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.member_promote(MemberPromoteRequest { id }).await {
            Ok(_) => return i,
            Err(e) => assert!(
                Instant::now() < deadline,
                "promoting {id:x}: {}",
                e.message()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn survivor_of_a_lost_quorum_rebuilds_the_cluster(kind: Kind) {
    if !require_tool("etcdctl") {
        return;
    }
    let Some(mut cluster) = (match kind {
        Kind::Etcd => Cluster::etcd(3, &[]).await,
        Kind::Ferrocd => Some(Cluster::ferrocd(3, &[]).await),
    }) else {
        return;
    };
    let mut client = cluster.members[0].client().await;
    let mut revision = 0;
    for n in 0..KEYS {
        let put = client
            .put(format!("k/{n:03}"), "v", None)
            .await
            .expect("put");
        revision = put.header().expect("header").revision();
    }
    drop(client);
    // Every member holds every acknowledged write: which one survives
    // then does not matter (the operator picks the one with the most).
    all_applied(&cluster, revision).await;
    let old = cluster.members[0].status().await.expect("status");
    let old = old.header.expect("header");

    // Quorum lost for good: two members and their data are gone.
    for mut gone in [cluster.take_member(2), cluster.take_member(1)] {
        gone.kill9();
        std::fs::remove_dir_all(gone.data_dir()).expect("remove data");
    }
    let survivor = &mut cluster.members[0];
    match kind {
        // etcd drops the entries after the commit index its WAL last
        // recorded, which a follower writes only with later entries: after
        // a kill -9 it can lose the newest acknowledged writes (seen
        // here). ferrocd keeps them; it is killed, etcd stopped cleanly.
        Kind::Etcd => {
            survivor.terminate();
        }
        Kind::Ferrocd => survivor.kill9(),
    }
    survivor.set_flag("--force-new-cluster", "true");
    survivor.restart().await;

    let status = survivor.status().await.expect("status");
    let header = status.header.expect("header");
    assert_eq!(header.member_id, old.member_id, "the member id is kept");
    assert_eq!(header.cluster_id, old.cluster_id, "the cluster id is kept");
    assert_eq!(status.leader, old.member_id, "the survivor leads");
    assert_eq!(member_list(survivor), vec![(old.member_id, false)]);
    let expected: Vec<String> = (0..KEYS).map(|n| format!("k/{n:03}")).collect();
    assert_eq!(keys(survivor).await, expected, "every acknowledged key");
    let put = survivor.etcdctl(&["put", "k/after", "x"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );

    // Grow back to three through learners.
    let second = grow(&mut cluster).await;
    let third = grow(&mut cluster).await;
    let list = member_list(&cluster.members[0]);
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list.iter().all(|(_, learner)| !learner), "{list:?}");
    let mut expected = expected;
    expected.push("k/after".into());
    for i in [second, third] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while keys(&cluster.members[i]).await != expected {
            assert!(
                Instant::now() < deadline,
                "{} did not catch up",
                cluster.members[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A restart with the flag still set: etcd rewrites the membership
    // again, ferrocd keeps it (it forces once per use of the flag).
    let survivor = &mut cluster.members[0];
    survivor.kill9();
    survivor.restart().await;
    let after = member_list(survivor).len();
    match kind {
        Kind::Etcd => assert_eq!(after, 1, "etcd forces at every start"),
        Kind::Ferrocd => {
            assert_eq!(after, 3, "a second start with the flag keeps the members");
            // Without the flag: a normal restart, the three still serve.
            survivor.kill9();
            survivor.set_flag("--force-new-cluster", "false");
            survivor.restart().await;
            cluster.leader().await;
            let mut c = ClusterClient::new(cluster.members[2].channel().await.expect("connect"));
            let members = c
                .member_list(MemberListRequest::default())
                .await
                .expect("member list")
                .into_inner()
                .members;
            assert_eq!(members.len(), 3);
            let put = cluster.members[1].etcdctl(&["put", "k/later", "y"]);
            assert!(
                put.status.success(),
                "{}",
                String::from_utf8_lossy(&put.stderr)
            );
        }
    }
}

ferrocd_e2e::on_etcd_and_ferrocd!(survivor_of_a_lost_quorum_rebuilds_the_cluster);

/// Without data the flag changes nothing: the member bootstraps a new
/// one-member cluster, as etcd does.
#[tokio::test]
async fn on_an_empty_data_dir_the_flag_is_a_normal_start() {
    let server = Server::ferrocd(&["--force-new-cluster"]).await;
    let put = server.etcdctl(&["put", "k", "v"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(member_list(&server).len(), 1);
    assert!(server.log().contains("no data yet"), "{}", server.log());
}
