//! Leases that expire together are revoked together: a burst of expiries
//! costs a few raft entries, not one round (and fsync) per lease.

use std::time::{Duration, Instant};

use ferrocd_e2e::Server;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};

const LEASES: i64 = 300;

#[tokio::test]
async fn a_burst_of_expired_leases_is_revoked_in_a_few_raft_entries() {
    let server = Server::ferrocd(&[]).await;
    let channel = server.channel().await.unwrap();
    let (mut leases, mut kv) = (LeaseClient::new(channel.clone()), KvClient::new(channel));
    let grants = (0..LEASES).map(|i| {
        let (mut leases, mut kv) = (leases.clone(), kv.clone());
        async move {
            let id = leases
                .lease_grant(LeaseGrantRequest { ttl: 2, id: 0 })
                .await
                .unwrap()
                .into_inner()
                .id;
            kv.put(PutRequest {
                key: format!("lease/{i}").into_bytes(),
                value: b"v".to_vec(),
                lease: id,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    futures::future::join_all(grants).await;
    let before = server.status().await.unwrap().raft_index;
    let all = || RangeRequest {
        key: b"lease/".to_vec(),
        range_end: b"lease0".to_vec(),
        count_only: true,
        ..Default::default()
    };
    assert_eq!(kv.range(all()).await.unwrap().into_inner().count, LEASES);
    let deadline = Instant::now() + Duration::from_secs(15);
    while kv.range(all()).await.unwrap().into_inner().count > 0 {
        assert!(
            Instant::now() < deadline,
            "keys of expired leases still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = server.status().await.unwrap().raft_index - before;
    assert!(
        entries < 60,
        "{LEASES} expired leases took {entries} raft entries to revoke"
    );
    let left = leases
        .lease_leases(ferrocd_proto::etcdserverpb::LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert!(left.is_empty(), "{} leases left", left.len());
}
