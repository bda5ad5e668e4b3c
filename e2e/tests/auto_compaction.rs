//! `--auto-compaction-mode=periodic --auto-compaction-retention=1s` on etcd
//! 3.4 and ferrocd: history older than the retention is compacted without
//! any client asking, and recent history stays readable.

use std::time::{Duration, Instant};

use ferrocd_e2e::{on_etcd_and_ferrocd, Kind, Server};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest};

async fn periodic_compaction_drops_old_history(kind: Kind) {
    let flags = [
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1s",
    ];
    let server = match kind {
        Kind::Ferrocd => Server::ferrocd(&flags).await,
        Kind::Etcd => match Server::etcd(&flags).await {
            Some(s) => s,
            None => return,
        },
    };
    let mut kv = KvClient::new(server.channel().await.unwrap());
    let at = |revision| RangeRequest {
        key: b"k".to_vec(),
        revision,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = loop {
        let last = kv
            .put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
        match kv.range(at(2)).await {
            Err(e) => {
                assert_eq!(
                    e.message(),
                    "etcdserver: mvcc: required revision has been compacted",
                    "{kind:?}"
                );
                break last;
            }
            Ok(_) => assert!(
                Instant::now() < deadline,
                "{kind:?} kept revision 2 for 15 s with a 1 s retention"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The newest revision is never compacted away.
    assert!(
        kv.range(at(last)).await.is_ok(),
        "{kind:?}: revision {last}"
    );
}

on_etcd_and_ferrocd!(periodic_compaction_drops_old_history);
