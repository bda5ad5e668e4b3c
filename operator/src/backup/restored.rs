//! A `ferrocd` member started on a backup restored into scratch, for
//! `verify-backup`: it proves the restored data directory starts and
//! serves, and answers HashKV at the backup's revision, which must equal
//! what the cluster answered when the backup was taken. The member is a
//! single-member cluster on free loopback ports; its log goes to a file
//! in the scratch directory, whose tail explains a member that never
//! answered.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{CompactionRequest, HashKvRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

use super::verify::VerifyError;

/// How long the restored member may take to elect itself.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one answer of the restored member.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Name of the restored member.
const NAME: &str = "verify";

/// Loopback ports for the restored member.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Client port.
    pub client: u16,
    /// Peer port (never dialed: the member is alone).
    pub peer: u16,
}

impl Ports {
    /// Two ports free right now (taken from the kernel and released).
    pub fn free() -> std::io::Result<Self> {
        let client = TcpListener::bind("127.0.0.1:0")?;
        let peer = TcpListener::bind("127.0.0.1:0")?;
        Ok(Self {
            client: client.local_addr()?.port(),
            peer: peer.local_addr()?.port(),
        })
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// The flags of `ferrocd snapshot restore` that make the restored
    /// directory this member's.
    pub fn restore_flags(&self) -> Vec<String> {
        vec![
            format!("--name={NAME}"),
            format!("--initial-cluster={NAME}={}", self.peer_url()),
            format!("--initial-advertise-peer-urls={}", self.peer_url()),
        ]
    }
}

/// What the restored member answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredHash {
    /// Its HashKV.
    pub hash: u32,
    /// Its compacted revision when it hashed.
    pub compact_revision: i64,
    /// The revision hashed.
    pub revision: i64,
}

/// A running restored member; stopped (killed and waited for) by [`stop`](Self::stop).
pub struct RestoredMember {
    child: tokio::process::Child,
    log: PathBuf,
    client_url: String,
}

impl RestoredMember {
    /// Starts `bin` on the restored `data_dir`, logging to `log`.
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        ports: Ports,
        log: &Path,
    ) -> Result<Self, VerifyError> {
        let file = std::fs::File::create(log).map_err(|source| VerifyError::Scratch {
            path: log.to_path_buf(),
            source,
        })?;
        let stderr = file.try_clone().map_err(|source| VerifyError::Scratch {
            path: log.to_path_buf(),
            source,
        })?;
        let client_url = ports.client_url();
        let child = tokio::process::Command::new(bin)
            .arg(format!("--name={NAME}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={}", ports.peer_url()))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                ports.peer_url()
            ))
            .arg(format!("--initial-cluster={NAME}={}", ports.peer_url()))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| VerifyError::Spawn {
                bin: bin.to_path_buf(),
                source,
            })?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
            client_url,
        })
    }

    /// Waits until the member leads, then asks HashKV at `revision` (or at
    /// its own head when that is lower: a snapshot's newest changes can be
    /// gone, see `verify::revision_matches`). When the backup's member had
    /// compacted further (`compact_to`), the restored store is compacted
    /// to the same revision first, since HashKV covers what is kept.
    pub async fn hash_kv(
        &mut self,
        revision: i64,
        compact_to: Option<i64>,
    ) -> Result<RestoredHash, VerifyError> {
        let (channel, head) = self.wait_leading().await?;
        let revision = revision.min(head);
        let mut maintenance = MaintenanceClient::new(channel.clone());
        let mut hash = self.ask_hash(&mut maintenance, revision).await?;
        if let Some(target) = compact_to {
            if target > hash.compact_revision && target <= revision {
                let mut kv = KvClient::new(channel);
                let compacted = kv.compact(CompactionRequest {
                    revision: target,
                    physical: true,
                });
                tokio::time::timeout(REQUEST_TIMEOUT, compacted)
                    .await
                    .map_err(|_| self.failed(format!("Compact({target}) was not answered")))?
                    .map_err(|status| self.failed(format!("Compact({target}): {status}")))?;
                hash = self.ask_hash(&mut maintenance, revision).await?;
            }
        }
        Ok(hash)
    }

    async fn ask_hash(
        &self,
        client: &mut MaintenanceClient<Channel>,
        revision: i64,
    ) -> Result<RestoredHash, VerifyError> {
        let asked = client.hash_kv(HashKvRequest { revision });
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, asked)
            .await
            .map_err(|_| self.failed(format!("HashKV({revision}) was not answered")))?
            .map_err(|status| self.failed(format!("HashKV({revision}): {status}")))?
            .into_inner();
        Ok(RestoredHash {
            hash: answer.hash,
            compact_revision: answer.compact_revision,
            revision: answer.hash_revision,
        })
    }

    /// A channel to the member once it leads, and its revision then.
    async fn wait_leading(&mut self) -> Result<(Channel, i64), VerifyError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let endpoint = Endpoint::from_shared(self.client_url.clone())
            .map_err(|e| self.failed(format!("client URL {}: {e}", self.client_url)))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(self.failed(format!("it exited ({exit})")));
            }
            match endpoint.connect().await {
                Ok(channel) => match MaintenanceClient::new(channel.clone())
                    .status(StatusRequest {})
                    .await
                {
                    Ok(status) => {
                        let status = status.into_inner();
                        if status.leader != 0 {
                            let head = status.header.map_or(0, |h| h.revision);
                            return Ok((channel, head));
                        }
                        last = "no leader yet".into();
                    }
                    Err(status) => last = format!("Status: {status}"),
                },
                Err(error) => last = format!("connecting: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(self.failed(format!("it did not lead within {READY_TIMEOUT:?} ({last})")))
    }

    fn failed(&self, what: String) -> VerifyError {
        VerifyError::RestoredMember {
            what,
            log_tail: tail(&self.log),
        }
    }

    /// Kills the member and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last lines of the member's log.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
