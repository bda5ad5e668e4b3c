//! `spec.recovery` of an `EtcdCluster`: what the operator may do on its own
//! when the cluster has lost its quorum for good, and `status.recovery`:
//! the rebuild from a backup under way (the operator's record, so that a
//! restarted operator carries on with the same backup) and the last one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Grace period used when `spec.recovery.gracePeriodSeconds` is not set.
pub const DEFAULT_RECOVERY_GRACE_SECONDS: u32 = 120;

/// Opt-in recovery from a lost quorum. Absent: the operator only reports
/// `QuorumLost=True` and changes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// How to rebuild the cluster.
    pub mode: RecoveryMode,
    /// How long a majority of voters must have been unreachable before
    /// the operator acts (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 86400))]
    pub grace_period_seconds: Option<u32>,
}

/// How a cluster that lost its quorum is rebuilt.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryMode {
    /// Restart the reachable member with the most data (highest raft
    /// index) with `--force-new-cluster`, delete the other members' pods
    /// and volumes, and grow back to `spec.replicas` through learners.
    /// Writes acknowledged only by the lost members are lost.
    FromSurvivor,
    /// Delete every member pod and volume and bootstrap a new cluster
    /// from the newest succeeded `EtcdBackup` of this cluster (with
    /// `spec.backup.verify`, the newest verified one; a backup whose
    /// verification failed is never used), as `spec.restore` does. Used
    /// even when members still hold data: every write made after the
    /// backup is lost. With no usable backup nothing is deleted.
    FromLatestBackup,
}

/// `status.recovery`: rebuilds from a backup. Written by the recovery step
/// under a field manager of its own, before anything is deleted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    /// The rebuild under way; cleared once the new cluster has a leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<BackupRebuild>,
    /// The last rebuild that finished: which backup and revision the
    /// cluster came back at. Its source stays in the members' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rebuild: Option<BackupRebuild>,
}

/// One rebuild of the cluster from an `EtcdBackup`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRebuild {
    /// The `EtcdBackup` chosen.
    pub backup_name: String,
    /// Its revision: the store comes back at this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The backup's file (S3 object or PVC file) and checksum, resolved
    /// when it was chosen; every member restores it.
    pub source: super::RestoreSpec,
    /// Where the rebuild stands.
    pub phase: RebuildPhase,
    /// When the backup was chosen.
    pub started_at: Time,
    /// When the rebuilt cluster had a leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// The steps of a rebuild from a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RebuildPhase {
    /// The StatefulSet, member pods and PVCs are being deleted.
    Deleting,
    /// All are gone; the members bootstrap from the backup.
    Restoring,
    /// The rebuilt cluster has a leader.
    Restored,
}

impl RecoverySpec {
    /// The grace period in seconds.
    pub fn grace_seconds(&self) -> u32 {
        self.grace_period_seconds
            .unwrap_or(DEFAULT_RECOVERY_GRACE_SECONDS)
    }
}
