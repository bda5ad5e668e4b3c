//! Flags of `ferrocd-operator backup`, the command a backup Job runs.
//! S3 credentials come from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`), filled from the credentials Secret.

use std::path::PathBuf;

use clap::Args;

use super::s3::{S3Config, DEFAULT_PART_SIZE};
use super::{BackupRequest, Outcome, Target};

/// `ferrocd-operator backup ...`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Client URL of the cluster, e.g. http://demo.prod.svc:2379; repeat
    /// it to name more, tried in order while the store cannot be reached.
    #[arg(long, required = true)]
    pub endpoint: Vec<String>,
    /// Directory of a mounted kubernetes.io/tls Secret (ca.crt, tls.crt,
    /// tls.key) to connect to a TLS cluster with.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Write the snapshot to this file.
    #[arg(
        long,
        conflicts_with = "s3_endpoint",
        required_unless_present = "s3_endpoint"
    )]
    pub file: Option<PathBuf>,
    /// Or to this S3 object.
    #[command(flatten)]
    pub s3: S3Args,
    /// Bytes per multipart upload part.
    #[arg(long, default_value_t = DEFAULT_PART_SIZE)]
    pub part_size: usize,
    /// After success, delete older snapshots of this cluster's schedule
    /// beside the new one (`<cluster>-YYYYMMDD-hhmmss.db`).
    #[arg(long)]
    pub retain_cluster: Option<String>,
    /// Keep at most this many of them.
    #[arg(long, requires = "retain_cluster")]
    pub retain_count: Option<u32>,
    /// Delete those older than this, e.g. 168h.
    #[arg(long, requires = "retain_cluster")]
    pub retain_age: Option<String>,
    /// Never delete the snapshot of this backup (an `EtcdBackup` name):
    /// the cluster's members restore from it. May be repeated.
    #[arg(long, requires = "retain_cluster")]
    pub retain_keep: Vec<String>,
    /// Where the outcome is written as JSON (the container's termination message).
    #[arg(long)]
    pub termination_log: Option<PathBuf>,
}

/// An S3 object and the credentials to reach it: the flags `backup` and
/// `restore` share (one of them or `--file`).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint URL.
    #[arg(long, requires_all = ["s3_bucket", "s3_key"])]
    pub s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// S3 object key.
    #[arg(long)]
    pub s3_key: Option<String>,
    /// Region requests are signed for.
    #[arg(long, default_value = crate::crd::DEFAULT_S3_REGION)]
    pub s3_region: String,
    /// Path-style addressing (endpoint/bucket/key).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,
    /// Access key ID.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
}

impl S3Args {
    /// The client configuration these flags give.
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: self.s3_endpoint.clone().unwrap_or_default(),
            bucket: self.s3_bucket.clone().unwrap_or_default(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            access_key: self.s3_access_key.clone().unwrap_or_default(),
            secret_key: self.s3_secret_key.clone().unwrap_or_default(),
        }
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        self.s3_key.as_deref().unwrap_or_default()
    }
}

impl BackupArgs {
    /// The backup these flags ask for.
    pub fn request(&self) -> BackupRequest {
        let target = match &self.file {
            Some(file) => Target::File(file.clone()),
            None => Target::S3 {
                config: self.s3.config(),
                key: self.s3.key().to_string(),
            },
        };
        BackupRequest {
            endpoints: self.endpoint.clone(),
            tls_dir: self.tls_dir.clone(),
            target,
            part_size: self.part_size,
        }
    }
}

/// Runs the backup, prints and records its outcome; the process's exit
/// code is 0 only on success.
pub async fn run(args: &BackupArgs) -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let request = args.request();
    let mut result = super::take(&request).await;
    if let (Ok(report), Some(cluster)) = (&mut result, &args.retain_cluster) {
        let retention = crate::crd::Retention {
            max_count: args.retain_count,
            max_age: args.retain_age.clone(),
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        // The backup is written; a failed cleanup is reported, not fatal.
        let keep = &args.retain_keep;
        match super::prune::prune(&request.target, cluster, &retention, keep, now).await {
            Ok(pruned) => report.pruned = pruned,
            Err(error) => eprintln!("retention: {error}"),
        }
    }
    report(
        &Outcome::of(&result),
        args.termination_log.as_deref(),
        &result,
        "backup",
    )
}

/// The end every backup subcommand shares: prints `outcome` as JSON on
/// stdout, writes it to `termination_log` (the container's termination
/// message) and turns `result` into the exit code, 0 only on success.
pub(crate) fn report<T, E: std::fmt::Display>(
    outcome: &impl serde::Serialize,
    termination_log: Option<&std::path::Path>,
    result: &Result<T, E>,
    what: &str,
) -> i32 {
    let json = serde_json::to_string(outcome).expect("an outcome always serializes");
    println!("{json}");
    if let Some(path) = termination_log {
        if let Err(error) = std::fs::write(path, &json) {
            eprintln!("writing {}: {error}", path.display());
        }
    }
    match result {
        Ok(_) => 0,
        Err(error) => {
            eprintln!("{what} failed: {error}");
            1
        }
    }
}
