//! The `EtcdBackup` custom resource (`ferrocd.io/v1alpha1`, one-shot): a
//! snapshot of an `EtcdCluster` taken once and written to S3-compatible
//! object storage or a PVC, and the destination types `spec.backup` shares.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Region used when `s3.region` is not set.
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// Key of the access key ID in an S3 credentials Secret.
pub const S3_ACCESS_KEY_ID: &str = "accessKeyID";
/// Key of the secret access key in an S3 credentials Secret.
pub const S3_SECRET_ACCESS_KEY: &str = "secretAccessKey";

/// A snapshot of an `EtcdCluster` in the same namespace, taken once by a Job.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrocd.io",
    version = "v1alpha1",
    kind = "EtcdBackup",
    namespaced,
    status = "EtcdBackupStatus",
    shortname = "fcdbackup",
    derive = "PartialEq",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.size"),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("an EtcdBackup's spec is immutable"))]
pub struct EtcdBackupSpec {
    /// Name of the `EtcdCluster` to back up, in the backup's namespace.
    #[schemars(length(min = 1))]
    pub cluster_name: String,
    /// Where the snapshot goes.
    pub destination: BackupDestination,
    /// After a successful backup, delete the older snapshots of the same
    /// schedule (files named `<cluster>-<YYYYMMDD>-<hhmmss>.db`) from the
    /// destination. Set by `spec.backup` of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// After the backup succeeds, run a Job that fetches it, checks its
    /// SHA-256 and revision and restores it into a scratch directory;
    /// the result is the `Verified` condition. Set by `spec.backup.verify`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// Scheduled backups of a cluster: `spec.backup` of an `EtcdCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSchedule {
    /// When to back up, a 5-field cron expression in UTC (`minute hour
    /// day-of-month month day-of-week`), e.g. `0 */6 * * *`.
    #[schemars(length(min = 9))]
    pub schedule: String,
    /// Where the snapshots go.
    pub destination: BackupDestination,
    /// How many and how old snapshots are kept.
    #[serde(default)]
    pub retention: Retention,
    /// Stop taking backups without forgetting the schedule.
    #[serde(default)]
    pub suspend: bool,
    /// Verify every successful backup (opt-in): a Job fetches it, checks
    /// its SHA-256 and revision and restores it into a scratch directory;
    /// the `EtcdBackup` gets a `Verified` condition, a failure an Event
    /// and `ferrocd_operator_backup_verify_failures_total`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// Which snapshots of a schedule are kept; the newest is always kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_count: Option<u32>,
    /// Delete those older than this, e.g. `168h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([0-9]+(h|m|s))+$"))]
    pub max_age: Option<String>,
}

/// Snapshots kept when `retention.maxCount` is not set.
pub const DEFAULT_RETENTION_COUNT: u32 = 7;

/// `status.backup` of an `EtcdCluster` with `spec.backup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupStatus {
    /// When the last scheduled backup was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The `EtcdBackup` of the last successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_location: Option<String>,
    /// Its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_sha256: Option<String>,
    /// Why the schedule can not run, if it can not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where snapshots are written: exactly one of `s3` and `pvc`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.s3) != has(self.pvc)")
        .message("destination needs exactly one of s3 and pvc")
)]
pub struct BackupDestination {
    /// S3-compatible object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// A PersistentVolumeClaim in the backup's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcDestination>,
}

/// A bucket of S3-compatible object storage, signed with SigV4.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Base URL of the service, e.g. `https://s3.eu-west-1.amazonaws.com`
    /// or `http://minio.storage.svc:9000`.
    #[schemars(regex(pattern = "^https?://"))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Prefix of the object keys, e.g. `prod/etcd/`; a `/` is added when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Region the requests are signed for (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret in the same namespace with keys `accessKeyID` and `secretAccessKey`.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
    /// Address buckets as `endpoint/bucket/key` (true, the default, what
    /// most self-hosted servers need) or as `bucket.endpoint/key`.
    #[serde(default = "default_true")]
    pub force_path_style: bool,
}

impl S3Destination {
    /// The region requests are signed for.
    pub fn region_or_default(&self) -> &str {
        self.region.as_deref().unwrap_or(DEFAULT_S3_REGION)
    }

    /// The object key of a snapshot file named `file`, under the prefix.
    pub fn key(&self, file: &str) -> String {
        join_prefix(self.prefix.as_deref(), file)
    }
}

/// A directory on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcDestination {
    /// Name of the claim, in the backup's namespace.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Directory inside the volume, relative to its root (default: the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[^/]"))]
    pub path: Option<String>,
}

impl PvcDestination {
    /// Path of a snapshot file named `file`, relative to the volume's root.
    pub fn relative_path(&self, file: &str) -> String {
        join_prefix(self.path.as_deref(), file)
    }
}

/// `prefix/file`, with exactly one `/` between them and none for no prefix.
fn join_prefix(prefix: Option<&str>, file: &str) -> String {
    match prefix.map(|p| p.trim_end_matches('/')) {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}/{file}"),
        _ => file.to_string(),
    }
}

/// Observed state of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupStatus {
    /// Where the backup is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// The Job taking the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Size of the snapshot file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Store revision the snapshot holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// SHA-256 of the whole snapshot file, in lower-case hex (what `sha256sum` prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The member's HashKV at `revision`, asked right after the snapshot;
    /// verification compares the restored store's with it.
    #[serde(default, rename = "hashKV", skip_serializing_if = "Option::is_none")]
    pub hash_kv: Option<i64>,
    /// The member's compacted revision when it answered `hashKV`.
    #[serde(
        default,
        rename = "hashKVCompactRevision",
        skip_serializing_if = "Option::is_none"
    )]
    pub hash_kv_compact_revision: Option<i64>,
    /// `s3://bucket/key` or `pvc://claim/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When the Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the backup succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How long taking and writing the snapshot took, e.g. `1.25s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Why the backup failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Complete` and `Failed`, following the Job's; `Verified` (Unknown
    /// while the verify Job runs, then True or False) when `spec.verify`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The `EtcdBackup` CRD as YAML, exactly as `crdgen etcdbackups` prints it.
pub fn backup_crd_yaml() -> String {
    let crd = <EtcdBackup as kube::CustomResourceExt>::crd();
    let yaml = serde_yaml::to_string(&crd).expect("a CRD always serializes to YAML");
    format!("---\n{yaml}")
}

/// Life of a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for its cluster or its Job to start.
    Pending,
    /// The Job is taking the snapshot.
    Running,
    /// The snapshot is written and its checksum recorded.
    Succeeded,
    /// The snapshot could not be taken or written; see `message`.
    Failed,
}

impl BackupPhase {
    /// Whether the backup is over and will not change again.
    pub fn is_final(self) -> bool {
        matches!(self, BackupPhase::Succeeded | BackupPhase::Failed)
    }
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn s3_destination_defaults_to_path_style_and_us_east_1() {
        let s3: S3Destination = serde_yaml::from_str(
            "{endpoint: 'http://s3:9000', bucket: b, credentialsSecret: creds}",
        )
        .unwrap();
        assert!(s3.force_path_style);
        assert_eq!(s3.region_or_default(), "us-east-1");
        assert_eq!(s3.key("demo.db"), "demo.db");
    }

    #[test]
    fn prefix_and_path_join_with_one_slash() {
        let s3: S3Destination = serde_yaml::from_str(
            "{endpoint: 'http://s3', bucket: b, credentialsSecret: c, prefix: prod/etcd/}",
        )
        .unwrap();
        assert_eq!(s3.key("x.db"), "prod/etcd/x.db");
        let pvc = PvcDestination {
            claim_name: "backups".into(),
            path: Some("demo".into()),
        };
        assert_eq!(pvc.relative_path("x.db"), "demo/x.db");
    }

    #[test]
    fn crd_requires_exactly_one_destination() {
        let crd = serde_json::to_value(EtcdBackup::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rule = &spec["properties"]["destination"]["x-kubernetes-validations"][0]["rule"];
        assert_eq!(rule, "has(self.s3) != has(self.pvc)");
        assert_eq!(crd["spec"]["names"]["kind"], "EtcdBackup");
    }

    #[test]
    fn final_phases_are_succeeded_and_failed() {
        assert!(BackupPhase::Succeeded.is_final());
        assert!(BackupPhase::Failed.is_final());
        assert!(!BackupPhase::Running.is_final());
        assert!(!BackupPhase::Pending.is_final());
    }
}
