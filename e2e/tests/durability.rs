//! Every acknowledged write survives `kill -9`, with the revision it was
//! acknowledged at; nothing is applied twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocd_e2e::Server;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest};

async fn kv(server: &Server) -> KvClient<tonic::transport::Channel> {
    KvClient::connect(server.client_url.clone())
        .await
        .expect("connect")
}

/// Puts keys from several writers until the server dies; returns what was
/// acknowledged as (key, revision).
async fn write_until_killed(server: &mut Server, writers: usize) -> Vec<(String, i64)> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = kv(server).await;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{w}/k{i:06}");
                let req = PutRequest {
                    key: key.clone().into_bytes(),
                    value: format!("value-{w}-{i}").into_bytes(),
                    ..Default::default()
                };
                match client.put(req).await {
                    Ok(resp) => {
                        let rev = resp.into_inner().header.expect("header").revision;
                        acked.lock().unwrap().push((key, rev));
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the writers get going, then pull the plug mid-stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        t.await.expect("writer task");
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::ferrocd(&[]).await;
    let acked = write_until_killed(&mut server, 8).await;
    assert!(
        acked.len() > 50,
        "too few writes acknowledged to test anything: {}",
        acked.len()
    );

    server.restart().await;
    let mut client = kv(&server).await;
    for (key, rev) in &acked {
        let resp = client
            .range(RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(
            resp.kvs.len(),
            1,
            "acknowledged key {key} lost after kill -9"
        );
        assert_eq!(
            resp.kvs[0].mod_revision, *rev,
            "{key} has another revision after restart"
        );
        assert_eq!(resp.kvs[0].version, 1, "{key} applied twice");
    }
    // Revisions are dense: one per put, none lost or doubled. Unacknowledged
    // puts that reached the log may also have been applied, never more.
    let all = client
        .range(RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count")
        .into_inner();
    let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap();
    let current = all.header.expect("header").revision;
    assert!(
        current >= max_acked,
        "revision went back: {current} < {max_acked}"
    );
    assert_eq!(all.count, current - 1, "every revision is exactly one put");
}

#[tokio::test]
async fn kill_9_twice_in_a_row_keeps_data() {
    let mut server = Server::ferrocd(&[]).await;
    let mut client = kv(&server).await;
    for i in 0..20 {
        let req = PutRequest {
            key: format!("k{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        client.put(req).await.expect("put");
    }
    for _ in 0..2 {
        server.kill9();
        server.restart().await;
    }
    let mut client = kv(&server).await;
    let resp = client
        .range(RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(resp.count, 20);
    assert_eq!(resp.header.expect("header").revision, 21);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let mut server = Server::ferrocd(&[]).await;
    let mut client = kv(&server).await;
    let put = PutRequest {
        key: b"kept".to_vec(),
        value: b"yes".to_vec(),
        ..Default::default()
    };
    client.put(put).await.expect("put");
    let status = server.terminate();
    assert!(status.success(), "ferrocd exited with {status} on SIGTERM");
    server.restart().await;
    let mut client = kv(&server).await;
    let resp = client
        .range(RangeRequest {
            key: b"kept".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(resp.kvs[0].value, b"yes");
}
