//! The peer port: mutual TLS between members (etcd 3.4 and ferrocd alike),
//! and what ferrocd's peer service refuses to callers that are not members,
//! with and without TLS.

use std::time::{Duration, Instant};

use ferrocd_e2e::pki::{CertFiles, Pki};
use ferrocd_e2e::{on_etcd_and_ferrocd, Cluster, Kind};
use ferrocd_proto::etcdserverpb::LeaseKeepAliveRequest;
use ferrocd_proto::ferrocdpb::peer_client::PeerClient;
use ferrocd_proto::ferrocdpb::{
    ClusterInfoRequest, PeerHashKvRequest, RaftMessage, RemovedRequest, TimeoutNowRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn peer_tls_flags(pki: &Pki, member: &CertFiles, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![
        format!("--peer-cert-file={}", member.cert.display()),
        format!("--peer-key-file={}", member.key.display()),
        format!("--peer-trusted-ca-file={}", pki.ca().display()),
        "--peer-client-cert-auth=true".to_string(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

async fn peer_tls_cluster(kind: Kind, pki: &mut Pki, extra: &[&str]) -> Option<Cluster> {
    if kind == Kind::Etcd && !ferrocd_e2e::require_tool("etcd") {
        return None;
    }
    let member = pki.issue("member", "member");
    let flags = peer_tls_flags(pki, &member, extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Some(Cluster::start_with_peer_tls(kind, 3, &flags).await)
}

/// Waits up to 15 s for `member` to serve `value` for `key` with a
/// serializable read (a member just started or restarted catches up).
async fn serves(member: &ferrocd_e2e::Server, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = member.etcdctl(&["get", key, "--print-value-only", "--consistency=s"]);
        let text = String::from_utf8_lossy(&got.stdout).trim().to_string();
        if text == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} {} serves {text:?} for {key}, not {value:?}: {}",
            member.kind,
            member.name,
            String::from_utf8_lossy(&got.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_peer_tls_cluster_replicates_and_a_killed_member_rejoins(kind: Kind) {
    let mut pki = Pki::new("peer-ca");
    let Some(mut cluster) = peer_tls_cluster(kind, &mut pki, &[]).await else {
        return;
    };
    assert!(cluster.members[0].peer_url.starts_with("https://"));
    let put = cluster.members[0].etcdctl(&["put", "k", "v1"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    serves(&cluster.members[2], "k", "v1").await;

    cluster.members[1].kill9();
    // The killed member may have led: the write waits for a new leader
    // (etcd answers "request timed out" meanwhile).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let put = cluster.members[2].etcdctl(&["put", "k", "v2"]);
        if put.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: no write after the kill: {}",
            String::from_utf8_lossy(&put.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.members[1].restart().await;
    serves(&cluster.members[1], "k", "v2").await;
}

async fn peer_auto_tls_clusters_replicate(kind: Kind) {
    if kind == Kind::Etcd && !ferrocd_e2e::require_tool("etcd") {
        return;
    }
    let cluster = Cluster::start_with_peer_tls(kind, 3, &["--peer-auto-tls"]).await;
    let put = cluster.members[1].etcdctl(&["put", "auto", "tls"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    serves(&cluster.members[2], "auto", "tls").await;
    serves(&cluster.members[0], "auto", "tls").await;
}

on_etcd_and_ferrocd!(
    a_peer_tls_cluster_replicates_and_a_killed_member_rejoins,
    peer_auto_tls_clusters_replicate,
);

/// A peer client to `url` (an `https://` peer URL) trusting `ca`, with
/// `identity` as its client certificate if given.
async fn tls_peer(
    url: &str,
    ca: &Pki,
    identity: Option<&CertFiles>,
) -> Result<PeerClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca.ca()).unwrap()));
    if let Some(files) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&files.cert).unwrap(),
            std::fs::read(&files.key).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(PeerClient::new(channel))
}

async fn cluster_info(client: Result<PeerClient<Channel>, String>) -> Result<u64, String> {
    let mut client = client?;
    client
        .cluster_info(ClusterInfoRequest {})
        .await
        .map(|r| r.into_inner().cluster_id)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn with_peer_mtls_only_holders_of_a_member_certificate_reach_the_peer_service() {
    let mut pki = Pki::new("peer-ca");
    let Some(cluster) =
        peer_tls_cluster(Kind::Ferrocd, &mut pki, &["--peer-cert-allowed-cn=member"]).await
    else {
        return;
    };
    let url = cluster.members[0].peer_url.clone();
    let member = pki.issue("another-member", "member");
    let wrong_cn = pki.issue("intruder", "intruder");
    let mut other_ca = Pki::new("other-ca");
    let stranger = other_ca.issue("stranger", "member");

    // The control: a member's certificate gets an answer.
    let id = cluster_info(tls_peer(&url, &pki, Some(&member)).await).await;
    assert!(
        id.is_ok_and(|id| id != 0),
        "a member certificate was refused"
    );

    let refused = [
        ("no client certificate", tls_peer(&url, &pki, None).await),
        (
            "another CA's certificate",
            tls_peer(&url, &pki, Some(&stranger)).await,
        ),
        (
            "a common name other than --peer-cert-allowed-cn",
            tls_peer(&url, &pki, Some(&wrong_cn)).await,
        ),
    ];
    for (what, client) in refused {
        let answer = cluster_info(client).await;
        assert!(
            answer.is_err(),
            "the peer port answered a caller with {what}: {answer:?}"
        );
    }
    let plain = Endpoint::from_shared(url.replace("https://", "http://"))
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .map(PeerClient::new)
        .map_err(|e| e.to_string());
    assert!(
        cluster_info(plain).await.is_err(),
        "plain text answered on a TLS peer port"
    );
}

/// A plain-text peer client to member `i`.
async fn plain_peer(cluster: &Cluster, i: usize) -> PeerClient<Channel> {
    let channel = Endpoint::from_shared(cluster.members[i].peer_url.clone())
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect("peer port");
    PeerClient::new(channel)
}

fn refused<T: std::fmt::Debug>(what: &str, answer: Result<T, tonic::Status>) {
    match answer {
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
        other => panic!("{what}: expected FailedPrecondition, got {other:?}"),
    }
}

#[tokio::test]
async fn without_peer_tls_the_peer_service_refuses_strangers() {
    let cluster = Cluster::ferrocd(3, &[]).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let cluster_id = cluster.members[0]
        .status()
        .await
        .unwrap()
        .header
        .unwrap()
        .cluster_id;
    let leader_id = cluster.member_id(leader).await;
    let follower_id = cluster.member_id(follower).await;
    let mut to_leader = plain_peer(&cluster, leader).await;
    let mut to_follower = plain_peer(&cluster, follower).await;

    let raft = |cluster_id| RaftMessage {
        cluster_id,
        payload: vec![1, 2, 3],
        incarnation: 0,
    };
    refused(
        "append without a cluster id",
        to_follower.append_entries(raft(0)).await,
    );
    refused(
        "vote from another cluster",
        to_follower.vote(raft(cluster_id ^ 1)).await,
    );
    refused(
        "a hash of the store for another cluster",
        to_follower
            .hash_kv(PeerHashKvRequest {
                cluster_id: cluster_id ^ 1,
                revision: 0,
            })
            .await,
    );
    refused(
        "lease renewal without a cluster id",
        to_leader.lease_renew(LeaseKeepAliveRequest { id: 1 }).await,
    );
    refused(
        "leader transfer from a non-leader",
        to_follower
            .timeout_now(TimeoutNowRequest {
                cluster_id,
                deadline_ms: 60_000,
                hold: true,
                from: follower_id ^ 0xffff,
            })
            .await,
    );
    refused(
        "removal told by a non-member",
        to_follower
            .removed(RemovedRequest {
                cluster_id,
                member_id: follower_id,
                from: 42,
            })
            .await,
    );
    // Claiming to be the leader: the follower asks the real leader, which
    // still lists it, and stays.
    to_follower
        .removed(RemovedRequest {
            cluster_id,
            member_id: follower_id,
            from: leader_id,
        })
        .await
        .expect("a removal notice from a member is heard (and checked)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut cluster = cluster;
    assert!(
        cluster.members[follower].exit_status().is_none(),
        "a forged removal notice shut the member down"
    );
    let put = cluster.members[follower].etcdctl(&["put", "still", "here"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
}

#[tokio::test]
async fn a_member_with_another_cas_certificate_cannot_join() {
    let mut pki = Pki::new("peer-ca");
    let Some(mut cluster) = peer_tls_cluster(Kind::Ferrocd, &mut pki, &[]).await else {
        return;
    };
    let new = cluster.plan_member();
    let url = new.peer_url().to_string();
    let add = cluster.etcdctl(&[
        "member",
        "add",
        &new.name,
        "--learner",
        &format!("--peer-urls={url}"),
    ]);
    let initial = ferrocd_e2e::initial_cluster_of(&add);
    let mut other_ca = Pki::new("other-ca");
    let stranger = other_ca.issue("stranger", "member");
    let flags = [
        format!("--peer-cert-file={}", stranger.cert.display()),
        format!("--peer-key-file={}", stranger.key.display()),
        format!("--peer-trusted-ca-file={}", other_ca.ca().display()),
        "--peer-client-cert-auth=true".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut outsider = cluster.launch_member(new, &initial, &flags);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = outsider.status().await;
    assert!(
        status.as_ref().map_or(true, |s| s.leader == 0),
        "a member with another CA's certificate got in: {status:?}\n{}",
        outsider.log()
    );
    outsider.kill9();
    let refused = cluster
        .members
        .iter()
        .any(|m| m.log().contains("rejected peer connection"));
    assert!(refused, "no member logged the refused handshake");
    // The cluster itself is unharmed.
    let put = cluster.members[0].etcdctl(&["put", "after", "outsider"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
}
