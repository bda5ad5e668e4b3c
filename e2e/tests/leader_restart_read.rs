//! A leader killed right after acknowledging a write and restarted at once
//! (before the others elect a new leader) must not serve a linearizable
//! read that misses that write. Found by the randomized fault runs: the
//! restarted member took up its old leadership with a commit index from
//! before the write (the commit index is not flushed at every commit) and
//! answered reads from it.

use std::time::{Duration, Instant};

use ferrocd_e2e::{on_etcd_and_ferrocd, Cluster, Kind};

async fn a_restarted_leader_reads_every_acknowledged_write(kind: Kind) {
    let Some(mut cluster) = (match kind {
        Kind::Ferrocd => Some(Cluster::ferrocd(3, &[]).await),
        Kind::Etcd => Cluster::etcd(3, &[]).await,
    }) else {
        return;
    };
    for round in 0..3 {
        let leader = cluster.leader().await;
        let value = format!("v{round}");
        let put = cluster.members[leader].etcdctl(&["put", "k", &value]);
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
        cluster.members[leader].kill9();
        cluster.members[leader].launch();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let get = cluster.members[leader].etcdctl(&[
                "--command-timeout=2s",
                "get",
                "k",
                "--print-value-only",
            ]);
            if get.status.success() {
                let seen = String::from_utf8_lossy(&get.stdout).trim().to_string();
                assert_eq!(
                    seen, value,
                    "{kind:?} round {round}: a linearizable read on the restarted leader missed an acknowledged write"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no read served after the restart"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.members[leader].wait_ready().await;
    }
}

on_etcd_and_ferrocd!(a_restarted_leader_reads_every_acknowledged_write);
