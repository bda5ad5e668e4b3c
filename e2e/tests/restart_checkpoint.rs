//! A restart answers every read as before it, whether the key index comes
//! from the checkpoint a graceful stop wrote, or is rebuilt from disk
//! (after kill -9, or when the checkpoint on disk is of another state).
//! Which one a start used, the server's log says.

use std::path::PathBuf;

use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions, PutOptions};
use ferrocd_e2e::Server;

const LOADED: &str = "key index loaded from its checkpoint";
const NO_CHECKPOINT: &str = "key index rebuilt from disk (no checkpoint)";
const NOT_USED: &str = "key index checkpoint not used";

fn checkpoint(server: &Server) -> PathBuf {
    server
        .data_dir()
        .join("member")
        .join("key-index.checkpoint")
}

fn count(server: &Server, line: &str) -> usize {
    server.log().matches(line).count()
}

/// Puts, overwrites, deletes (single keys and a range), leases and a
/// compaction, then more changes after it; returns the lease.
async fn write_history(client: &mut Client, round: u32) -> i64 {
    let lease = client.lease_grant(600, None).await.expect("grant").id();
    for i in 0..60 {
        let key = format!("k/{round}/{i:03}");
        client.put(key.clone(), "v1", None).await.expect("put");
        if i % 3 == 0 {
            let opts = PutOptions::new().with_lease(lease);
            client.put(key, "v2", Some(opts)).await.expect("put");
        }
    }
    for i in (0..60).step_by(7) {
        client
            .delete(format!("k/{round}/{i:03}"), None)
            .await
            .expect("delete");
    }
    let mid = revision(client).await;
    let opts = DeleteOptions::new().with_range(format!("k/{round}/040"));
    client
        .delete(format!("k/{round}/030"), Some(opts))
        .await
        .expect("delete range");
    client
        .compact(mid, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    for i in 25..45 {
        client
            .put(format!("k/{round}/{i:03}"), "v3", None)
            .await
            .expect("put");
    }
    lease
}

/// The store's current revision.
async fn revision(client: &mut Client) -> i64 {
    let got = client.get("k", None).await.expect("get");
    got.header().expect("a header").revision()
}

/// Every read a client can make of the keys: the whole range at each
/// revision from the compacted one on, and the lease's keys.
async fn reads(client: &mut Client, leases: &[i64]) -> Vec<String> {
    let now = revision(client).await;
    let mut out = Vec::new();
    let mut compacted = None;
    for rev in 1..=now {
        let opts = GetOptions::new().with_prefix().with_revision(rev);
        match client.get("k/", Some(opts)).await {
            Ok(r) => {
                compacted.get_or_insert(rev);
                let kvs: Vec<String> = r
                    .kvs()
                    .iter()
                    .map(|kv| {
                        format!(
                            "{}={} c{} m{} v{} l{}",
                            kv.key_str().unwrap(),
                            kv.value_str().unwrap(),
                            kv.create_revision(),
                            kv.mod_revision(),
                            kv.version(),
                            kv.lease()
                        )
                    })
                    .collect();
                out.push(format!("@{rev}: {}", kvs.join(", ")));
            }
            Err(e) => {
                assert!(compacted.is_none(), "read at {rev} failed: {e}");
                assert!(e.to_string().contains("compacted"), "{e}");
            }
        }
    }
    assert!(compacted.unwrap_or(1) > 1, "no compaction in the history");
    for &lease in leases {
        let opts = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
        let ttl = client
            .lease_time_to_live(lease, Some(opts))
            .await
            .expect("ttl");
        let keys: Vec<String> = ttl
            .keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        out.push(format!("lease {lease:x}: {keys:?}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_read_the_same_with_or_without_the_checkpoint() {
    let mut server = Server::ferrocd(&[]).await;
    let mut client = server.client().await;
    let mut leases = vec![write_history(&mut client, 0).await];
    let before = reads(&mut client, &leases).await;
    assert_eq!(count(&server, NO_CHECKPOINT), 1);

    // Graceful stop: the checkpoint is written, then loaded (and removed).
    assert!(server.terminate().success());
    assert!(checkpoint(&server).exists(), "no checkpoint after SIGTERM");
    server.restart().await;
    assert_eq!(count(&server, LOADED), 1, "{}", server.log());
    assert!(
        !checkpoint(&server).exists(),
        "checkpoint left after loading"
    );
    let mut client = server.client().await;
    assert_eq!(reads(&mut client, &leases).await, before);

    // More history on the loaded index, then kill -9: no checkpoint, rebuilt.
    leases.push(write_history(&mut client, 1).await);
    let before = reads(&mut client, &leases).await;
    server.kill9();
    server.restart().await;
    assert_eq!(count(&server, NO_CHECKPOINT), 2, "{}", server.log());
    let mut client = server.client().await;
    assert_eq!(reads(&mut client, &leases).await, before);

    // A checkpoint of an older state put back in place is refused.
    assert!(server.terminate().success());
    let old = std::fs::read(checkpoint(&server)).expect("checkpoint");
    server.restart().await;
    assert_eq!(count(&server, LOADED), 2, "{}", server.log());
    let mut client = server.client().await;
    leases.push(write_history(&mut client, 2).await);
    let before = reads(&mut client, &leases).await;
    assert!(server.terminate().success());
    std::fs::write(checkpoint(&server), old).expect("put the old checkpoint back");
    server.restart().await;
    let mut client = server.client().await;
    assert_eq!(reads(&mut client, &leases).await, before);
    assert_eq!(count(&server, NOT_USED), 1, "{}", server.log());
    assert_eq!(count(&server, LOADED), 2);

    // A torn checkpoint is refused too.
    assert!(server.terminate().success());
    let path = checkpoint(&server);
    let len = std::fs::metadata(&path).expect("checkpoint").len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 1).unwrap();
    drop(file);
    server.restart().await;
    assert_eq!(count(&server, NOT_USED), 2, "{}", server.log());
    let mut client = server.client().await;
    assert_eq!(reads(&mut client, &leases).await, before);
}
