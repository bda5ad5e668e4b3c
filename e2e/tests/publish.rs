//! A member serves clients only once it has published its attributes
//! (name and client URLs) through raft, as etcd's members do: one member
//! of a stopped three-member cluster, started alone, can not publish
//! without a quorum and answers nothing, not even a serializable read of
//! data it holds, until a second member is back. Run against etcd 3.4
//! (`*_on_etcd`) and ferrocd (`*_on_ferrocd`) with the same assertions.

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use ferrocd_e2e::{Cluster, Kind, Server};

/// What a serializable read of `key` on `member` answers within about a
/// second; None when it does not answer (no connection, or no reply).
async fn serializable_read(member: &Server, key: &str) -> Option<String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(800))
        .with_timeout(Duration::from_millis(800));
    let attempt = async {
        let mut client = Client::connect([member.client_url.as_str()], Some(options))
            .await
            .ok()?;
        let resp = client
            .get(key, Some(GetOptions::new().with_serializable()))
            .await
            .ok()?;
        resp.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    };
    tokio::time::timeout(Duration::from_millis(1500), attempt)
        .await
        .ok()
        .flatten()
}

async fn a_member_serves_only_once_it_has_published(kind: Kind) {
    let Some(mut cluster) = Cluster::of_kind_with_etcdctl(kind, 3, &[]).await else {
        return;
    };
    let put = cluster.members[0].etcdctl(&["put", "published/k", "v"]);
    assert!(put.status.success(), "{put:?}");
    for i in 0..3 {
        assert_eq!(
            wait_read(&cluster.members[i], Duration::from_secs(10)).await,
            Some("v".to_string()),
            "member {i} has the key"
        );
    }
    for member in &mut cluster.members {
        member.kill9();
    }

    // Alone: it holds the key, but has no quorum to publish with.
    cluster.members[0].launch();
    let alone = Instant::now();
    while alone.elapsed() < Duration::from_secs(4) {
        let answer = serializable_read(&cluster.members[0], "published/k").await;
        assert_eq!(
            answer,
            None,
            "{kind:?}: a member that could not publish answered after {:?}; log:\n{}",
            alone.elapsed(),
            cluster.members[0].log()
        );
    }

    // With a second member back it publishes, then serves.
    cluster.members[1].launch();
    let back = Instant::now();
    let answer = wait_read(&cluster.members[0], Duration::from_secs(30)).await;
    assert_eq!(
        answer.as_deref(),
        Some("v"),
        "{kind:?}: no answer within 30 s of a quorum; log:\n{}",
        cluster.members[0].log()
    );
    eprintln!(
        "{kind:?}: the restarted member served {:?} after a second member was back",
        back.elapsed()
    );
}

/// The first answer of a serializable read of the test key within `limit`.
async fn wait_read(member: &Server, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(value) = serializable_read(member, "published/k").await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

ferrocd_e2e::on_etcd_and_ferrocd!(a_member_serves_only_once_it_has_published);
