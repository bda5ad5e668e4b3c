//! Backups: the store's `Maintenance.Snapshot` stream, checksummed while
//! it streams and written to a file (a mounted PVC) or to S3, never held
//! whole in memory. `ferrocd-operator backup` runs [`take`] in a Job and
//! reports the [`Outcome`] as the container's termination message, which
//! the operator copies into the `EtcdBackup`'s status.
//!
//! * [`checksum`]: SHA-256 of the file and the check of the snapshot's own trailer.
//! * [`s3`]: the object storage client.
//! * [`sink`]: where the bytes go.
//! * [`job`]: the Job that runs a backup, built from an `EtcdBackup`.
//! * [`schedule`]: cron schedules, scheduled backups' names, retention.
//! * [`prune`]: retention applied to the destination by the Job.
//! * [`restore`]: `ferrocd-operator restore`, the members' init step of `spec.restore`.
//! * [`restore_pod`]: that init container, built for the StatefulSet.
//! * [`verify`]: `ferrocd-operator verify-backup`, restoring a stored backup into scratch.
//! * [`restored`]: the member it starts there to ask HashKV.
//! * [`verify_job`]: the Job that runs it for a succeeded `EtcdBackup`.
//! * [`cli`]: the `backup` subcommand's flags.

pub mod checksum;
pub mod cli;
pub mod job;
pub mod prune;
pub mod restore;
pub mod restore_pod;
pub mod restored;
pub mod s3;
pub mod schedule;
pub mod sink;
pub mod verify;
pub mod verify_job;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{HashKvRequest, SnapshotRequest, SnapshotResponse};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::tls::{CA_CRT, TLS_CRT, TLS_KEY};
use checksum::{Checksum, ChecksumError};
use s3::{S3Config, S3Error};
use sink::Sink;

/// How long connecting to the store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next piece of the snapshot stream.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the HashKV taken after the snapshot (a whole-store scan).
const HASH_KV_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The client certificate files could not be read.
    #[error("reading {path}: {source}")]
    ClientCertificate {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The store's endpoint is not a usable URL or TLS configuration.
    #[error("store endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The store could not be reached.
    #[error("connecting to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport's error.
        reason: String,
    },
    /// The store refused or broke off the snapshot.
    #[error("snapshot stream: {0}")]
    Snapshot(#[source] tonic::Status),
    /// The store stopped sending.
    #[error("snapshot stream: nothing received for {CHUNK_TIMEOUT:?}")]
    Stalled,
    /// The bytes are not a whole snapshot.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// Object storage failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The retention can not be applied.
    #[error("retention: {0}")]
    Retention(#[from] schedule::ScheduleError),
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl BackupError {
    /// Short reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClientCertificate { .. } | Self::Endpoint { .. } | Self::Retention(_) => {
                "Configuration"
            }
            Self::Connect { .. } => "StoreUnreachable",
            Self::Snapshot(_) | Self::Stalled => "SnapshotFailed",
            Self::Checksum(_) => "ChecksumMismatch",
            Self::S3(_) => "ObjectStorageFailed",
            Self::File { .. } => "WriteFailed",
        }
    }

    /// Whether the store was not reached at the endpoint: no connection,
    /// or one on which the snapshot call got no answer (a plain client on
    /// a TLS listener, say). Another endpoint may then be tried: nothing
    /// was written yet.
    pub fn unreachable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            // The channel's own failure (the status's source is the
            // transport error, code Unknown or Unavailable), not an
            // answer of the store.
            Self::Snapshot(status) => {
                status.code() == tonic::Code::Unavailable
                    || std::error::Error::source(status)
                        .is_some_and(|s| s.is::<tonic::transport::Error>())
            }
            _ => false,
        }
    }
}

/// What a backup took and where it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    /// Bytes written.
    pub size: u64,
    /// Store revision of the snapshot.
    pub revision: i64,
    /// SHA-256 of the whole file, lower-case hex.
    pub sha256: String,
    /// `s3://bucket/key` or the file's path.
    pub location: String,
    /// Wall time from connecting to the destination's acknowledgement.
    pub duration_seconds: f64,
    /// Older snapshots of the schedule the retention deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// The member's HashKV at `revision`, asked right after the snapshot
    /// (on the same connection, so of the same member). None when it did
    /// not answer, e.g. a compaction past `revision` came first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_kv: Option<HashKvRecord>,
}

/// What HashKV answered for a backup's revision: what a store restored
/// from the backup must answer too, once compacted to the same revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HashKvRecord {
    /// The hash of every kept key and value up to the revision.
    pub hash: u32,
    /// The member's compacted revision when it hashed.
    pub compact_revision: i64,
}

/// The termination message of a backup container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// The snapshot is written.
    Succeeded(BackupReport),
    /// It is not; `reason` is one of [`BackupError::reason`].
    Failed {
        /// Short reason.
        reason: String,
        /// The error.
        message: String,
    },
}

impl Outcome {
    /// The outcome of [`take`].
    pub fn of(result: &Result<BackupReport, BackupError>) -> Self {
        match result {
            Ok(report) => Outcome::Succeeded(report.clone()),
            Err(error) => Outcome::Failed {
                reason: error.reason().to_string(),
                message: error.to_string(),
            },
        }
    }
}

/// Where a backup goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A file (on a mounted volume); written beside and renamed into place.
    File(PathBuf),
    /// An S3 object.
    S3 {
        /// The bucket and credentials.
        config: S3Config,
        /// The object key.
        key: String,
    },
}

/// One backup to take.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// Client URLs of the cluster, e.g. `https://demo.prod.svc:2379`, in
    /// the order they are tried: the next is tried only when the store
    /// cannot be reached at one (see [`BackupError::unreachable`]).
    pub endpoints: Vec<String>,
    /// Directory with `ca.crt`, `tls.crt`, `tls.key` for a TLS cluster.
    pub tls_dir: Option<PathBuf>,
    /// The destination.
    pub target: Target,
    /// S3 part size in bytes.
    pub part_size: usize,
}

/// Streams a snapshot from the store into the target.
pub async fn take(request: &BackupRequest) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let (mut client, mut stream) = open_snapshot(request).await?;
    let mut sink = Sink::open(&request.target, request.part_size).await?;
    let mut checksum = Checksum::default();
    let mut revision = 0;
    let streamed: Result<(), BackupError> = async {
        loop {
            let message = tokio::time::timeout(CHUNK_TIMEOUT, stream.message())
                .await
                .map_err(|_| BackupError::Stalled)?
                .map_err(BackupError::Snapshot)?;
            let Some(message) = message else {
                return Ok(());
            };
            if let Some(header) = &message.header {
                revision = revision.max(header.revision);
            }
            checksum.update(&message.blob);
            sink.write(&message.blob).await?;
        }
    }
    .await;
    let sum = match streamed.and_then(|()| Ok(checksum.finish()?)) {
        Ok(sum) => sum,
        Err(error) => {
            sink.abort().await;
            return Err(error);
        }
    };
    let hash_kv = hash_kv_at(&mut client, revision).await;
    let location = sink.finish().await?;
    Ok(BackupReport {
        size: sum.size,
        revision,
        sha256: sum.sha256,
        location,
        duration_seconds: started.elapsed().as_secs_f64(),
        pruned: Vec::new(),
        hash_kv,
    })
}

/// The member's HashKV at `revision`. A backup without it is still a
/// backup (verification then skips the comparison), so a failure is only
/// reported on stderr.
async fn hash_kv_at(
    client: &mut MaintenanceClient<tonic::transport::Channel>,
    revision: i64,
) -> Option<HashKvRecord> {
    if revision <= 0 {
        return None;
    }
    let asked = client.hash_kv(HashKvRequest { revision });
    match tokio::time::timeout(HASH_KV_TIMEOUT, asked).await {
        Ok(Ok(answer)) => {
            let answer = answer.into_inner();
            Some(HashKvRecord {
                hash: answer.hash,
                compact_revision: answer.compact_revision,
            })
        }
        Ok(Err(status)) => {
            eprintln!("HashKV at revision {revision}: {status}; the backup records none");
            None
        }
        Err(_) => {
            eprintln!("HashKV at revision {revision}: no answer within {HASH_KV_TIMEOUT:?}; the backup records none");
            None
        }
    }
}

/// Starts the snapshot stream at the first endpoint that answers. A
/// backup Job keeps the endpoints it was created with while the cluster
/// may be switching to TLS (the client listener moving from `http://` to a
/// side `https://` port, then back to the usual port): it is given every
/// endpoint the switch will use, from the one current at its creation on.
async fn open_snapshot(
    request: &BackupRequest,
) -> Result<
    (
        MaintenanceClient<tonic::transport::Channel>,
        tonic::Streaming<SnapshotResponse>,
    ),
    BackupError,
> {
    let mut first_error = None;
    for endpoint in &request.endpoints {
        let opened = async {
            let mut client = connect(endpoint, request.tls_dir.as_deref()).await?;
            let stream = client
                .snapshot(SnapshotRequest {})
                .await
                .map_err(BackupError::Snapshot)?
                .into_inner();
            Ok::<_, BackupError>((client, stream))
        }
        .await;
        match opened {
            Ok(opened) => return Ok(opened),
            Err(error) if error.unreachable() => {
                eprintln!("{error}");
                first_error.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(first_error.unwrap_or_else(|| BackupError::Endpoint {
        endpoint: String::new(),
        reason: "no endpoint given".into(),
    }))
}

async fn connect(
    endpoint: &str,
    tls_dir: Option<&Path>,
) -> Result<MaintenanceClient<tonic::transport::Channel>, BackupError> {
    let endpoint_error = |reason: String| BackupError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut channel = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| endpoint_error(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(dir) = tls_dir {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| BackupError::ClientCertificate { path, source })
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(CA_CRT)?))
            .identity(Identity::from_pem(read(TLS_CRT)?, read(TLS_KEY)?));
        channel = channel
            .tls_config(tls)
            .map_err(|e| endpoint_error(e.to_string()))?;
    }
    let channel = channel.connect().await.map_err(|e| BackupError::Connect {
        endpoint: endpoint.to_string(),
        reason: format!("{e}: {}", source_chain(&e)),
    })?;
    // Snapshots are bigger than tonic's default 4 MiB decoding limit per
    // message only if the store sends big chunks; allow generous ones.
    Ok(MaintenanceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(inner) = source {
        parts.push(inner.to_string());
        source = inner.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_round_trips_as_tagged_json() {
        let outcome = Outcome::Succeeded(BackupReport {
            size: 20480,
            revision: 7,
            sha256: "ab".repeat(32),
            location: "s3://b/k.db".into(),
            duration_seconds: 0.5,
            pruned: Vec::new(),
            hash_kv: Some(HashKvRecord {
                hash: 7,
                compact_revision: 3,
            }),
        });
        let json = serde_json::to_string(&outcome).unwrap();
        assert!(json.contains("\"outcome\":\"succeeded\""), "{json}");
        assert!(json.contains("\"durationSeconds\":0.5"), "{json}");
        assert!(json.contains("\"compactRevision\":3"), "{json}");
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
    }

    #[test]
    fn failure_carries_reason_and_message() {
        let result: Result<BackupReport, BackupError> = Err(BackupError::Stalled);
        let Outcome::Failed { reason, message } = Outcome::of(&result) else {
            panic!("a failure");
        };
        assert_eq!(reason, "SnapshotFailed");
        assert!(message.contains("nothing received"), "{message}");
    }
}
