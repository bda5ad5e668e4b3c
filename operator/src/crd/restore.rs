//! `spec.restore` of an `EtcdCluster`: bootstrap a new cluster from a
//! snapshot (an `EtcdBackup`, an S3 object or a file on a PVC, e.g. an
//! `etcdctl snapshot save` file of a real etcd), and `status.restore`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the snapshot of a new cluster comes from: exactly one of
/// `backupName`, `s3` and `pvc`. Every member restores the same file with
/// the same cluster flags, only when its data directory is empty and it
/// bootstraps the cluster (members added later join it as usual).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.backupName) ? 1 : 0) + (has(self.s3) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1")
        .message("restore needs exactly one of backupName, s3 and pvc")
)]
pub struct RestoreSpec {
    /// A succeeded `EtcdBackup` in the same namespace; its SHA-256 is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// An S3 object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Object>,
    /// A file on a PVC in the same namespace (mounted read-only by every member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcFile>,
    /// Expected SHA-256 of the file (lower-case hex); checked before restoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// Restore a file without etcd's SHA-256 trailer (a copied `member/snap/db`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_hash_check: bool,
}

/// One object of S3-compatible storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Object {
    /// Base URL of the service.
    #[schemars(regex(pattern = "^https?://"))]
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Region requests are signed for (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret with keys `accessKeyID` and `secretAccessKey`.
    pub credentials_secret: String,
    /// Path-style addressing (default true).
    #[serde(default = "default_true")]
    pub force_path_style: bool,
}

/// One file on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcFile {
    /// Name of the claim.
    pub claim_name: String,
    /// Path of the file inside the volume, relative to its root.
    #[schemars(regex(pattern = "^[^/]"))]
    pub path: String,
}

/// `status.restore`: where the snapshot came from and how restoring went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The source as resolved when the cluster was created (a `backupName`
    /// becomes its object or file and checksum), kept so the members'
    /// pods never change if the `EtcdBackup` goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RestoreSpec>,
    /// What is wrong, when something is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Restored`: False with reason `RestoreFailed` when a member's restore
    /// failed (its data directory is left empty), or `BackupNotReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn default_true() -> bool {
    true
}
