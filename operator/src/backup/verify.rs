//! `ferrocd-operator verify-backup`: proves a stored backup can be
//! restored and is the one recorded. It fetches the snapshot (S3 or a
//! mounted file) into a scratch directory, checks its SHA-256 against the
//! recorded one, reads it with `ferrocd snapshot status -w json` (bbolt's
//! consistency check, the store's revision and key count) and compares
//! the revision with the recorded one (see [`revision_matches`] for why
//! only a newer one is certain to be wrong), then runs `ferrocd snapshot
//! restore` into the scratch directory, which decodes every change, lease
//! and auth record, and starts a member on it ([`super::restored`]): it
//! must lead and answer HashKV at the backup's revision, equal to the
//! HashKV the backup recorded when it recorded one. The scratch directory
//! is removed whatever happens.
//! The [`VerifyOutcome`] is the container's termination message.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::cli::S3Args;
use super::restore::{fetch, RestoreError};
use super::restored::{Ports, RestoredHash, RestoredMember};
use super::HashKvRecord;

/// Why a backup did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The snapshot could not be fetched.
    #[error("fetching the snapshot: {0}")]
    Fetch(#[source] RestoreError),
    /// The scratch directory could not be prepared.
    #[error("{path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stored file is not the one the backup recorded.
    #[error("stored snapshot sha256 is {actual}, the backup recorded {expected}")]
    ChecksumMismatch {
        /// Recorded SHA-256.
        expected: String,
        /// SHA-256 of the stored file.
        actual: String,
    },
    /// `ferrocd` could not be run.
    #[error("running {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `ferrocd snapshot status` rejected the file.
    #[error("ferrocd snapshot status failed ({status}): {output}")]
    Status {
        /// Its exit status.
        status: String,
        /// Its standard error.
        output: String,
    },
    /// `ferrocd snapshot status` printed something that is not its JSON.
    #[error("ferrocd snapshot status printed no readable status: {0}")]
    StatusOutput(#[source] serde_json::Error),
    /// The snapshot holds another revision than the backup recorded.
    #[error("snapshot holds changes up to revision {snapshot}, after the backup's recorded revision {recorded}")]
    RevisionMismatch {
        /// Recorded revision.
        recorded: i64,
        /// Revision of the file.
        snapshot: i64,
    },
    /// `ferrocd snapshot restore` failed.
    #[error("ferrocd snapshot restore failed ({status}): {output}")]
    Restore {
        /// Its exit status.
        status: String,
        /// Its standard error.
        output: String,
    },
    /// The member started on the restored directory did not serve.
    #[error(
        "the member started on the restored backup failed: {what}; its log ends with: {log_tail}"
    )]
    RestoredMember {
        /// What it did not do.
        what: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The restored store hashes differently from the backed-up one.
    #[error("restored store's HashKV at revision {revision} is {restored} (compacted at {restored_compact_revision}), the cluster's was {recorded} (compacted at {recorded_compact_revision})")]
    HashKvMismatch {
        /// The revision hashed.
        revision: i64,
        /// The cluster's hash when the backup was taken.
        recorded: u32,
        /// Its compacted revision then.
        recorded_compact_revision: i64,
        /// The restored store's hash.
        restored: u32,
        /// Its compacted revision.
        restored_compact_revision: i64,
    },
}

impl VerifyError {
    /// Short reason for the `Verified` condition and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Fetch(_) => "FetchFailed",
            Self::Scratch { .. } | Self::Spawn { .. } => "VerifierFailed",
            Self::ChecksumMismatch { .. } => "ChecksumMismatch",
            Self::Status { .. } | Self::StatusOutput(_) => "SnapshotUnreadable",
            Self::RevisionMismatch { .. } => "RevisionMismatch",
            Self::Restore { .. } => "RestoreFailed",
            Self::RestoredMember { .. } => "RestoredMemberFailed",
            Self::HashKvMismatch { .. } => "HashKVMismatch",
        }
    }
}

/// What `ferrocd snapshot status -w json` prints (etcdctl's fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SnapshotStatus {
    /// CRC-32C of the buckets' contents.
    pub hash: u32,
    /// The store's revision.
    pub revision: i64,
    /// Keys in all buckets.
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    /// Database size in bytes.
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// SHA-256 of the stored file.
    pub sha256: String,
    /// Revision the snapshot holds.
    pub revision: i64,
    /// Keys in all its buckets, as `snapshot status` counts them.
    pub total_keys: u64,
    /// `snapshot status`'s hash of its contents.
    pub hash: u32,
    /// HashKV of the member started on the restored store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_kv: Option<u32>,
    /// Whether it was compared with (and equal to) one the backup recorded.
    #[serde(default)]
    pub hash_kv_compared: bool,
}

impl VerifyReport {
    /// One line for the `Verified` condition and its Event.
    pub fn summary(&self) -> String {
        let restores = format!(
            "sha256 {} matches, revision {} with {} keys restores",
            self.sha256, self.revision, self.total_keys
        );
        match (self.hash_kv, self.hash_kv_compared) {
            (Some(hash), true) => format!("{restores} and serves HashKV {hash}, the cluster's"),
            (Some(hash), false) => {
                format!("{restores} and serves (HashKV {hash}; the backup recorded none)")
            }
            (None, _) => restores,
        }
    }
}

/// The termination message of a verify container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum VerifyOutcome {
    /// The backup restores and is the one recorded.
    Verified(VerifyReport),
    /// It is not; `reason` is one of [`VerifyError::reason`].
    Failed {
        /// Short reason.
        reason: String,
        /// The error.
        message: String,
    },
}

impl VerifyOutcome {
    /// The outcome of [`verify`].
    pub fn of(result: &Result<VerifyReport, VerifyError>) -> Self {
        match result {
            Ok(report) => Self::Verified(report.clone()),
            Err(error) => Self::Failed {
                reason: error.reason().to_string(),
                message: error.to_string(),
            },
        }
    }
}

/// Flags of `ferrocd-operator verify-backup`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The snapshot as a file (a mounted PVC).
    #[arg(
        long,
        conflicts_with = "s3_endpoint",
        required_unless_present = "s3_endpoint"
    )]
    pub file: Option<PathBuf>,
    /// Or this S3 object.
    #[command(flatten)]
    pub s3: S3Args,
    /// SHA-256 the backup recorded.
    #[arg(long)]
    pub sha256: String,
    /// Revision the backup recorded.
    #[arg(long)]
    pub revision: i64,
    /// HashKV the backup recorded at that revision.
    #[arg(long, requires = "hash_kv_compact_revision")]
    pub hash_kv: Option<u32>,
    /// The compacted revision recorded with `--hash-kv`.
    #[arg(long, requires = "hash_kv")]
    pub hash_kv_compact_revision: Option<i64>,
    /// Scratch directory, created and removed (it must not exist).
    #[arg(long, default_value = "/tmp/ferrocd-verify")]
    pub scratch_dir: PathBuf,
    /// The ferrocd binary.
    #[arg(long, default_value = "ferrocd")]
    pub ferrocd_bin: PathBuf,
    /// Where the outcome is written as JSON (the container's termination message).
    #[arg(long)]
    pub termination_log: Option<PathBuf>,
}

/// Verifies, prints and records the outcome; the exit code is 0 only
/// when the backup verified.
pub async fn run(args: &VerifyArgs) -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = verify(args).await;
    super::cli::report(
        &VerifyOutcome::of(&result),
        args.termination_log.as_deref(),
        &result,
        "backup verification",
    )
}

/// Verifies the backup `args` name; see the module's documentation.
pub async fn verify(args: &VerifyArgs) -> Result<VerifyReport, VerifyError> {
    let scratch = &args.scratch_dir;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|source| VerifyError::Scratch {
            path: scratch.clone(),
            source,
        })?;
    let result = verify_in(args, scratch).await;
    let _ = tokio::fs::remove_dir_all(scratch).await;
    result
}

async fn verify_in(args: &VerifyArgs, scratch: &Path) -> Result<VerifyReport, VerifyError> {
    let snapshot = scratch.join("snapshot.db");
    let sha256 = fetch(args.file.as_deref(), &args.s3, &snapshot)
        .await
        .map_err(VerifyError::Fetch)?;
    if !args.sha256.eq_ignore_ascii_case(&sha256) {
        return Err(VerifyError::ChecksumMismatch {
            expected: args.sha256.clone(),
            actual: sha256,
        });
    }
    let output = ferrocd(args, |c| {
        c.arg("snapshot")
            .arg("status")
            .arg(&snapshot)
            .args(["-w", "json"]);
    })
    .await?;
    if !output.status.success() {
        return Err(VerifyError::Status {
            status: output.status.to_string(),
            output: stderr(&output),
        });
    }
    let status: SnapshotStatus =
        serde_json::from_slice(output.stdout.trim_ascii()).map_err(VerifyError::StatusOutput)?;
    if !revision_matches(status.revision, args.revision) {
        return Err(VerifyError::RevisionMismatch {
            recorded: args.revision,
            snapshot: status.revision,
        });
    }
    let restored = scratch.join("data");
    let ports = Ports::free().map_err(|source| VerifyError::Scratch {
        path: scratch.to_path_buf(),
        source,
    })?;
    let output = ferrocd(args, |c| {
        c.arg("snapshot")
            .arg("restore")
            .arg(&snapshot)
            .arg(format!("--data-dir={}", restored.display()))
            .args(ports.restore_flags());
    })
    .await?;
    if !output.status.success() {
        return Err(VerifyError::Restore {
            status: output.status.to_string(),
            output: stderr(&output),
        });
    }
    let recorded = args.recorded_hash_kv();
    let log = scratch.join("member.log");
    let mut member = RestoredMember::start(&args.ferrocd_bin, &restored, ports, &log)?;
    let hashed = member
        .hash_kv(args.revision, recorded.map(|r| r.compact_revision))
        .await;
    member.stop().await;
    let hashed = hashed?;
    if let Some(recorded) = recorded {
        if !hash_kv_matches(&recorded, &hashed) {
            return Err(VerifyError::HashKvMismatch {
                revision: hashed.revision,
                recorded: recorded.hash,
                recorded_compact_revision: recorded.compact_revision,
                restored: hashed.hash,
                restored_compact_revision: hashed.compact_revision,
            });
        }
    }
    Ok(VerifyReport {
        sha256,
        revision: status.revision,
        total_keys: status.total_key,
        hash: status.hash,
        hash_kv: Some(hashed.hash),
        hash_kv_compared: recorded.is_some(),
    })
}

impl VerifyArgs {
    /// The HashKV the backup recorded, if any.
    pub fn recorded_hash_kv(&self) -> Option<HashKvRecord> {
        Some(HashKvRecord {
            hash: self.hash_kv?,
            compact_revision: self.hash_kv_compact_revision?,
        })
    }
}

/// Whether the restored store hashed as the cluster did: the same hash
/// over the same kept history (compacted at the same revision).
pub fn hash_kv_matches(recorded: &HashKvRecord, restored: &RestoredHash) -> bool {
    recorded.hash == restored.hash && recorded.compact_revision == restored.compact_revision
}

/// Whether a snapshot whose newest change is at `snapshot` (what
/// `snapshot status` reads from the `key` bucket) can be the backup
/// recorded at store revision `recorded`. Equal in general; lower when the
/// newest changes are gone: an empty store (revision 1, no change) or
/// deleted keys whose tombstones a compaction at the head removed. Never
/// higher: a snapshot holding changes after the recorded revision is
/// another backup.
pub fn revision_matches(snapshot: i64, recorded: i64) -> bool {
    snapshot <= recorded
}

async fn ferrocd(
    args: &VerifyArgs,
    build: impl FnOnce(&mut tokio::process::Command),
) -> Result<std::process::Output, VerifyError> {
    let mut command = tokio::process::Command::new(&args.ferrocd_bin);
    build(&mut command);
    command.output().await.map_err(|source| VerifyError::Spawn {
        bin: args.ferrocd_bin.clone(),
        source,
    })
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_of_ferrocd_parses() {
        let status: SnapshotStatus = serde_json::from_str(
            r#"{"hash":3044323718,"revision":21,"totalKey":31,"totalSize":24576}"#,
        )
        .unwrap();
        assert_eq!(status.revision, 21);
        assert_eq!(status.total_key, 31);
    }

    #[test]
    fn only_a_snapshot_newer_than_recorded_is_a_revision_mismatch() {
        assert!(revision_matches(42, 42));
        // An empty store, or tombstones compacted at the head.
        assert!(revision_matches(0, 1));
        assert!(revision_matches(2, 3));
        assert!(!revision_matches(43, 42));
    }

    #[test]
    fn outcome_round_trips_with_its_reason() {
        let result: Result<VerifyReport, VerifyError> = Err(VerifyError::RevisionMismatch {
            recorded: 7,
            snapshot: 9,
        });
        let outcome = VerifyOutcome::of(&result);
        let json = serde_json::to_string(&outcome).unwrap();
        assert!(json.contains("\"outcome\":\"failed\""), "{json}");
        let VerifyOutcome::Failed { reason, message } =
            serde_json::from_str::<VerifyOutcome>(&json).unwrap()
        else {
            panic!("a failure: {json}");
        };
        assert_eq!(reason, "RevisionMismatch");
        assert!(message.contains("revision 9"), "{message}");
    }
}
