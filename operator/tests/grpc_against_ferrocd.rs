//! The gRPC `EtcdApi` against a real single-member `ferrocd` process: the
//! read side. Membership changes against real multi-member clusters are in
//! `membership_against_real_stores.rs`.

use ferrocd_e2e::{free_port, Server};
use ferrocd_operator::grpc::GrpcEtcd;
use ferrocd_operator::membership::{observe_members, EtcdApi, EtcdError};

#[tokio::test]
async fn member_list_of_a_single_member_lists_that_member() {
    let server = Server::ferrocd(&[]).await;
    let api = GrpcEtcd::new(&server.client_url, None).unwrap();
    let members = api.member_list().await.unwrap().members;
    assert_eq!(members.len(), 1);
    let solo = &members[0];
    assert_eq!(solo.name, "default");
    assert_eq!(solo.peer_urls, vec![server.peer_url.clone()]);
    assert_eq!(solo.client_urls, vec![server.client_url.clone()]);
    assert!(!solo.is_learner);
}

#[tokio::test]
async fn member_list_carries_the_cluster_id_of_the_header() {
    let server = Server::ferrocd(&[]).await;
    let api = GrpcEtcd::new(&server.client_url, None).unwrap();
    let list = api.member_list().await.unwrap();
    assert_ne!(list.cluster_id, 0, "a cluster always has an ID");
    let mut client = server.client().await;
    let header = client
        .member_list()
        .await
        .unwrap()
        .header()
        .cloned()
        .unwrap();
    assert_eq!(list.cluster_id, header.cluster_id());
}

#[tokio::test]
async fn single_member_reports_itself_as_leader() {
    let server = Server::ferrocd(&[]).await;
    let api = GrpcEtcd::new(&server.client_url, None).unwrap();
    let id = api.member_list().await.unwrap().members[0].id;
    let status = api.status(&server.client_url).await.unwrap();
    assert_eq!(status.member_id, id);
    assert_eq!(status.leader, id);
    assert!(!status.is_learner);
    assert!(status.raft_applied_index <= status.raft_index);
    assert!(!status.version.is_empty());
}

#[tokio::test]
async fn observed_single_member_is_a_healthy_caught_up_voter() {
    let server = Server::ferrocd(&[]).await;
    let api = GrpcEtcd::new(&server.client_url, None).unwrap();
    let observed = observe_members(&api).await.expect("store answers");
    assert_eq!(observed.len(), 1);
    let solo = &observed[0];
    assert_eq!(solo.peer_url, server.peer_url);
    assert!(solo.healthy && solo.caught_up && !solo.is_learner);
}

#[tokio::test]
async fn closed_port_is_unavailable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let api = GrpcEtcd::new(&url, None).unwrap();
    assert!(matches!(
        api.member_list().await,
        Err(EtcdError::Unavailable(_))
    ));
    assert!(matches!(
        api.status(&url).await,
        Err(EtcdError::Unavailable(_))
    ));
}
