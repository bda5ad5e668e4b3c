//! `ferrocd-operator restore`: the init step of a member of a cluster with
//! `spec.restore`. Only a member bootstrapping the cluster
//! (`--initial-cluster-state new`) with an empty data directory restores:
//! it fetches the snapshot (S3 or a mounted file) into a scratch directory
//! on its data volume, checks its SHA-256, runs `ferrocd snapshot restore`
//! with its own flags into the scratch directory, and renames the result's
//! `member` directory into place last. A failure at any step leaves the
//! data directory as empty as it found it.

use std::path::{Path, PathBuf};

use clap::Args;
use http_body_util::BodyExt;
use ring::digest::{Context, SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::checksum::hex;
use super::cli::S3Args;
use super::s3::{S3Client, S3Error};

/// The directory a member's data lives in, inside its data directory.
const MEMBER_DIR: &str = "member";
/// Scratch directory on the data volume, removed after every attempt.
const SCRATCH_DIR: &str = ".restore";

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Fetching from S3 failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the one expected.
    #[error("snapshot sha256 is {actual}, expected {expected}")]
    ChecksumMismatch {
        /// Expected SHA-256.
        expected: String,
        /// SHA-256 of the fetched file.
        actual: String,
    },
    /// `ferrocd snapshot restore` failed.
    #[error("ferrocd snapshot restore failed ({status}): {output}")]
    Restore {
        /// Its exit status.
        status: String,
        /// Its standard error.
        output: String,
    },
}

/// What the init step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The data directory already holds a member: nothing to do.
    HasData,
    /// The member joins an existing cluster and gets its data from the leader.
    Joining,
    /// Restored a snapshot of this SHA-256.
    Restored {
        /// SHA-256 of the file restored.
        sha256: String,
    },
}

/// Flags of `ferrocd-operator restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The member's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// `--name` of the member.
    #[arg(long)]
    pub name: String,
    /// `--initial-cluster` of the member.
    #[arg(long)]
    pub initial_cluster: String,
    /// `--initial-cluster-state`; only `new` restores.
    #[arg(long)]
    pub initial_cluster_state: String,
    /// `--initial-cluster-token`.
    #[arg(long)]
    pub initial_cluster_token: String,
    /// `--initial-advertise-peer-urls`.
    #[arg(long)]
    pub initial_advertise_peer_urls: String,
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
    /// Expected SHA-256 of the file.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Pass `--skip-hash-check` to `ferrocd snapshot restore`.
    #[arg(long)]
    pub skip_hash_check: bool,
    /// The ferrocd binary.
    #[arg(long, default_value = "ferrocd")]
    pub ferrocd_bin: PathBuf,
    /// Where a failure is written (the container's termination message).
    #[arg(long)]
    pub termination_log: Option<PathBuf>,
}

/// Runs the init step; the exit code is 0 unless it failed.
pub async fn run(args: &RestoreArgs) -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match restore_member(args).await {
        Ok(outcome) => {
            println!("restore: {outcome:?}");
            0
        }
        Err(error) => {
            let message = format!("restoring member {}: {error}", args.name);
            eprintln!("{message}");
            if let Some(path) = &args.termination_log {
                let _ = std::fs::write(path, &message);
            }
            1
        }
    }
}

/// Restores the member if it bootstraps the cluster with no data.
pub async fn restore_member(args: &RestoreArgs) -> Result<RestoreOutcome, RestoreError> {
    let data_dir = &args.data_dir;
    if data_dir.join(MEMBER_DIR).exists() {
        return Ok(RestoreOutcome::HasData);
    }
    if args.initial_cluster_state != "new" {
        return Ok(RestoreOutcome::Joining);
    }
    let scratch = data_dir.join(SCRATCH_DIR);
    let result = restore_into(args, &scratch).await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    result
}

async fn restore_into(args: &RestoreArgs, scratch: &Path) -> Result<RestoreOutcome, RestoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::File { path, source }
    };
    let _ = tokio::fs::remove_dir_all(scratch).await;
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(io(scratch))?;
    let snapshot = scratch.join("snapshot.db");
    let sha256 = fetch(args.file.as_deref(), &args.s3, &snapshot).await?;
    if let Some(expected) = &args.sha256 {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(RestoreError::ChecksumMismatch {
                expected: expected.clone(),
                actual: sha256,
            });
        }
    }
    let restored = scratch.join("data");
    let mut command = tokio::process::Command::new(&args.ferrocd_bin);
    command
        .arg("snapshot")
        .arg("restore")
        .arg(&snapshot)
        .arg(format!("--data-dir={}", restored.display()))
        .arg(format!("--name={}", args.name))
        .arg(format!("--initial-cluster={}", args.initial_cluster))
        .arg(format!(
            "--initial-cluster-token={}",
            args.initial_cluster_token
        ))
        .arg(format!(
            "--initial-advertise-peer-urls={}",
            args.initial_advertise_peer_urls
        ));
    if args.skip_hash_check {
        command.arg("--skip-hash-check");
    }
    let output = command.output().await.map_err(io(&args.ferrocd_bin))?;
    if !output.status.success() {
        return Err(RestoreError::Restore {
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let target = args.data_dir.join(MEMBER_DIR);
    tokio::fs::rename(restored.join(MEMBER_DIR), &target)
        .await
        .map_err(io(&target))?;
    let dir = tokio::fs::File::open(&args.data_dir)
        .await
        .map_err(io(&args.data_dir))?;
    dir.sync_all().await.map_err(io(&args.data_dir))?;
    Ok(RestoreOutcome::Restored { sha256 })
}

/// Copies the snapshot (`file`, or else the object of `s3`) to `to`,
/// returning its SHA-256.
pub async fn fetch(file: Option<&Path>, s3: &S3Args, to: &Path) -> Result<String, RestoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::File { path, source }
    };
    let mut out = tokio::fs::File::create(to).await.map_err(io(to))?;
    let mut digest = Context::new(&SHA256);
    match file {
        Some(file) => {
            let mut input = tokio::fs::File::open(file).await.map_err(io(file))?;
            let mut buffer = vec![0; 1 << 20];
            loop {
                let n = input.read(&mut buffer).await.map_err(io(file))?;
                if n == 0 {
                    break;
                }
                digest.update(&buffer[..n]);
                out.write_all(&buffer[..n]).await.map_err(io(to))?;
            }
        }
        None => {
            let client = S3Client::new(&s3.config())?;
            let mut body = client.download(s3.key()).await?;
            // A stalled download fails instead of hanging the member's start.
            let stall = std::time::Duration::from_secs(60);
            while let Some(frame) =
                tokio::time::timeout(stall, body.frame())
                    .await
                    .map_err(|_| S3Error::Timeout {
                        operation: "GetObject",
                    })?
            {
                let frame = frame.map_err(|e| S3Error::Transport {
                    operation: "GetObject",
                    source: Box::new(e),
                })?;
                if let Ok(data) = frame.into_data() {
                    digest.update(&data);
                    out.write_all(&data).await.map_err(io(to))?;
                }
            }
        }
    }
    out.sync_all().await.map_err(io(to))?;
    Ok(hex(digest.finish().as_ref()))
}
