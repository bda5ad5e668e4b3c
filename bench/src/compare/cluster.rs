//! A cluster under comparison: N members of ferrocd or etcd on loopback with
//! fresh data directories, started by the e2e harness
//! ([`ferrocd_e2e::Cluster`]), and the two cluster figures: failover after
//! `kill -9` of the leader, and catch-up of a learner added to a full store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferrocd_e2e::Cluster;
use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{MemberAddRequest, PutRequest, RangeRequest};

use super::server::{is_live, rss_of, Kind};
use super::Target;
use crate::conn::Pool;
use crate::runner::{RunOpts, Until};
use crate::{keys, workload};

/// etcd's default raft timings, given to both: the harness's own default
/// is faster elections for tests, which would flatter the failover figure.
const TIMINGS: &[&str] = &["--heartbeat-interval=100", "--election-timeout=1000"];

/// Writers during the failover measurement, and how long one of their puts
/// may take before it is abandoned and sent again (a put forwarded to the
/// dead leader is never answered).
const FAILOVER_WRITERS: usize = 8;
const FAILOVER_PUT_TIMEOUT: Duration = Duration::from_millis(500);

/// The key written last before the learner starts; the learner has caught
/// up for reads once it serves it.
const LAST_KEY: &[u8] = b"catchup/last";

/// The members of one running cluster; every process is killed on drop.
pub struct Members {
    pub kind: Kind,
    cluster: Cluster,
    /// Indexes of members added as learners (they take no client writes).
    learners: Vec<usize>,
}

/// How long a learner took to catch up, from the start of its process.
#[derive(Clone, Copy, Debug)]
pub struct CatchUp {
    /// Keys in the store when the learner started.
    pub keys: i64,
    /// Until its applied index reached the leader's (`None`: not in time).
    pub applied: Option<Duration>,
    /// Until it served a serializable read of the last key written.
    pub read: Option<Duration>,
}

impl Members {
    /// Starts `n` members of `kind` and waits until each knows the leader.
    /// ferrocd comes from `FERROCD_BIN` and etcd from PATH (the harness's
    /// rules; `compare` sets the former).
    pub async fn start(kind: Kind, n: usize) -> Members {
        let harness_kind = match kind {
            Kind::Ferrocd => ferrocd_e2e::Kind::Ferrocd,
            Kind::Etcd => ferrocd_e2e::Kind::Etcd,
        };
        Members {
            kind,
            cluster: Cluster::start(harness_kind, n, TIMINGS).await,
            learners: Vec::new(),
        }
    }

    /// Client URLs of the running voting members.
    fn voter_urls(&self, except: Option<usize>) -> Vec<String> {
        self.cluster
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| m.is_running() && !self.learners.contains(i) && Some(*i) != except)
            .map(|(_, m)| m.client_url.clone())
            .collect()
    }

    /// Fills the store up to `keys` keys (64 B keys, 256 B values), writes
    /// [`LAST_KEY`], adds a learner and starts it; then times, from the
    /// start of its process, its applied index reaching the leader's and its
    /// first serializable read of the last key, each within `limit`.
    pub async fn catch_up(&mut self, keys: u64, limit: Duration) -> anyhow::Result<CatchUp> {
        let pool = Pool::connect(&self.voter_urls(None), 10, false).await?;
        let stored = super::count_keys(&pool).await?;
        let missing = keys.saturating_sub(u64::try_from(stored).unwrap_or(0));
        let fill = RunOpts {
            clients: 100,
            until: Until::Total(missing),
            rate: None,
            timeout: Duration::from_secs(30),
            progress: false,
        };
        workload::preload(&pool, &fill, "catchup/", missing, 64, 256).await?;
        let marker = format!("{}-{}", self.kind.name(), stored);
        let put = PutRequest {
            key: LAST_KEY.to_vec(),
            value: marker.clone().into_bytes(),
            ..Default::default()
        };
        pool.kv(0).put(put).await.context("put the last key")?;
        let stored = super::count_keys(&pool).await?;

        let (new, initial) = self.announce_learner().await?;
        let leader = self.cluster.leader().await;
        let target = self.cluster.members[leader]
            .status()
            .await
            .map_err(anyhow::Error::msg)?
            .raft_applied_index;

        let t0 = Instant::now();
        let i = self.cluster.start_member(new, &initial, &[]).await;
        self.learners.push(i);
        let learner = &self.cluster.members[i];
        let mut kv = KvClient::new(learner.channel().await.map_err(anyhow::Error::msg)?);
        let (mut applied, mut read) = (None, None);
        while (applied.is_none() || read.is_none()) && t0.elapsed() < limit {
            if applied.is_none() {
                if let Ok(s) = learner.status().await {
                    if s.raft_applied_index >= target {
                        applied = Some(t0.elapsed());
                    }
                }
            }
            if read.is_none() {
                let get = RangeRequest {
                    key: LAST_KEY.to_vec(),
                    serializable: true,
                    ..Default::default()
                };
                if let Ok(r) = kv.range(get).await {
                    if r.get_ref().kvs.first().map(|kv| kv.value.as_slice())
                        == Some(marker.as_bytes())
                    {
                        read = Some(t0.elapsed());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(CatchUp {
            keys: stored,
            applied,
            read,
        })
    }

    /// MemberAdd of a learner through a running member (retried while etcd
    /// calls the cluster unhealthy: it wants every member connected for
    /// 5 s first); returns the planned member and its `--initial-cluster`.
    async fn announce_learner(&mut self) -> anyhow::Result<(ferrocd_e2e::NewMember, String)> {
        let new = self.cluster.plan_member();
        let via = &self.cluster.members[self.cluster.leader().await];
        let mut c = ClusterClient::new(via.channel().await.map_err(anyhow::Error::msg)?);
        let request = MemberAddRequest {
            peer_ur_ls: vec![new.peer_url().to_string()],
            is_learner: true,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let resp = loop {
            match c.member_add(request.clone()).await {
                Ok(resp) => break resp.into_inner(),
                Err(e) if e.message().contains("unhealthy") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("MemberAdd of a learner: {}", e.message()),
            }
        };
        let initial = resp
            .members
            .iter()
            .flat_map(|m| {
                // The member not started yet has no name.
                let name = if m.name.is_empty() {
                    &new.name
                } else {
                    &m.name
                };
                m.peer_ur_ls.iter().map(move |u| format!("{name}={u}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        Ok((new, initial))
    }

    /// Kills the leader with SIGKILL while [`FAILOVER_WRITERS`] clients put
    /// through the other voting members, and returns the time from the
    /// kill until the first put sent after it succeeded (`None`: none
    /// within `limit`).
    pub async fn failover(&mut self, limit: Duration) -> anyhow::Result<Option<Duration>> {
        let leader = self.cluster.leader().await;
        let pool = Pool::connect(&self.voter_urls(Some(leader)), FAILOVER_WRITERS, false).await?;
        let writes = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..FAILOVER_WRITERS)
            .map(|i| {
                let (mut kv, writes, stop) = (pool.kv(i), writes.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let put = PutRequest {
                            key: keys::key(&format!("failover/{i}/"), seq, 32),
                            value: keys::value(64),
                            ..Default::default()
                        };
                        let sent = Instant::now();
                        match tokio::time::timeout(FAILOVER_PUT_TIMEOUT, kv.put(put)).await {
                            Ok(Ok(_)) => writes.lock().unwrap().push((sent, Instant::now())),
                            _ => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                })
            })
            .collect();

        // A second of steady writes first, so the kill lands mid-stream.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let steady = writes.lock().unwrap().len();
        let killed = Instant::now();
        self.cluster.members[leader].kill9();
        let mut recovered = None;
        while recovered.is_none() && killed.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
            recovered = first_write_after(&writes.lock().unwrap(), killed);
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.abort();
        }
        if steady == 0 {
            bail!(
                "{}: no put succeeded in the second before the leader was killed",
                self.kind.name()
            );
        }
        Ok(recovered)
    }
}

/// Time from `killed` to the earliest answer among writes sent after it.
fn first_write_after(writes: &[(Instant, Instant)], killed: Instant) -> Option<Duration> {
    writes
        .iter()
        .filter(|(sent, _)| *sent >= killed)
        .map(|(_, answered)| answered.duration_since(killed))
        .min()
}

impl Target for Members {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn client_urls(&self) -> Vec<String> {
        self.voter_urls(None)
    }

    /// The sum over the running members.
    fn rss_bytes(&self) -> Option<u64> {
        self.cluster
            .members
            .iter()
            .filter_map(|m| m.pid())
            .map(rss_of)
            .sum()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &self.cluster.members {
            if m.pid().is_some_and(|pid| !is_live(pid)) {
                let log = m.log();
                let lines: Vec<&str> = log.lines().collect();
                bail!(
                    "{} member {} died; log:\n{}",
                    self.kind.name(),
                    m.name,
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_counts_only_writes_sent_after_the_kill() {
        let killed = Instant::now();
        let ms = |n| killed + Duration::from_millis(n);
        let before = killed - Duration::from_millis(100);
        let writes = [(before, ms(50)), (ms(900), ms(1400)), (ms(1000), ms(1200))];
        assert_eq!(
            first_write_after(&writes, killed),
            Some(Duration::from_millis(1200))
        );
        assert_eq!(first_write_after(&writes[..1], killed), None);
    }
}
