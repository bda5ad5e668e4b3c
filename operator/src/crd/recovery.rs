//! `spec.recovery` of an `EtcdCluster`: what the operator may do on its own
//! when the cluster has lost its quorum for good.

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
}

impl RecoverySpec {
    /// The grace period in seconds.
    pub fn grace_seconds(&self) -> u32 {
        self.grace_period_seconds
            .unwrap_or(DEFAULT_RECOVERY_GRACE_SECONDS)
    }
}
