//! Quorum-loss recovery, the decision: a pure function from what each
//! member pod answered, how long the quorum has been gone and
//! `spec.recovery` to what the reconciler should do (see
//! `controller::recovery` for the I/O).
//!
//! The quorum counts as lost when fewer member pods than a quorum of the
//! voters last seen are Ready (the kubelet's view: it holds even when the
//! operator can not reach the pods) and fewer voters than a quorum answer
//! with a leader (the store's view: a member that lost its quorum may still
//! name itself leader, so one answer is not enough). Both must agree
//! before anything is deleted. Without `spec.recovery` that is only reported. With
//! `FromSurvivor`, once the grace period has passed, the member with the
//! highest raft index among those that answer is forced to become the only
//! member (`--force-new-cluster`); the planner then grows the cluster back
//! through learners. With `FromLatestBackup` every member is deleted and
//! the cluster bootstraps from the newest usable backup ([`rebuild`]).

use std::time::Duration;

use crate::crd::{RecoveryMode, RecoverySpec};
use crate::membership::{quorum, EndpointStatus};

pub mod rebuild;
pub use rebuild::{BackupCandidate, Rebuild};

/// What one member pod answered to `Maintenance.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// StatefulSet ordinal of the pod.
    pub ordinal: i32,
    /// Its status; `None` when it did not answer (down, or crash-looping on
    /// an empty volume that may not rejoin).
    pub status: Option<EndpointStatus>,
}

/// What the reconciler knows when it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Situation<'a> {
    /// `spec.recovery`.
    pub recovery: Option<&'a RecoverySpec>,
    /// Voters in the member list last seen (the store can not list them
    /// without a quorum).
    pub voters: usize,
    /// Member pods that are Ready.
    pub ready_pods: usize,
    /// One probe per member pod.
    pub probes: &'a [Probe],
    /// How long the quorum has been reported lost (`None`: it was not).
    pub lost_for: Option<Duration>,
    /// The pod a recovery already under way forces (from the ConfigMap).
    pub forcing: Option<i32>,
    /// The cluster's `EtcdBackup`s (listed only for `FromLatestBackup`).
    pub backups: &'a [BackupCandidate],
    /// `spec.backup.verify`: only a verified backup may be used.
    pub verify_required: bool,
    /// A rebuild from a backup under way (`voters` is then `spec.replicas`).
    pub rebuild: Option<Rebuild<'a>>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Enough member pods are Ready, or enough voters know a leader.
    Healthy,
    /// The quorum is lost and `spec.recovery` is absent: report only.
    ReportOnly { reachable: usize },
    /// The quorum is lost; the grace period has this much left.
    Waiting { remaining: Duration },
    /// The quorum is lost and no member answers: nothing to rebuild from.
    NoSurvivor,
    /// Start the recovery: force the member of this ordinal, which has the
    /// highest raft index of those that answered.
    Force { ordinal: i32, raft_index: u64 },
    /// A recovery is under way: the forced member does not lead alone yet.
    AwaitSurvivor { ordinal: i32 },
    /// The forced member leads alone: the recovery's part is done (the
    /// ConfigMap entry goes; the planner grows the cluster back).
    Recovered { ordinal: i32 },
    /// `FromLatestBackup` past the grace period, but no backup is usable
    /// (the reason): nothing is deleted, the next look tries again.
    NoUsableBackup { reason: String },
    /// Start a rebuild from this backup: record it, delete every member.
    RebuildFromBackup { backup: BackupCandidate },
    /// The StatefulSet, member pods or PVCs (`left` of them) are still going.
    ClearingMembers { backup: String, left: usize },
    /// All gone: the members bootstrap from the backup.
    BootstrapFromBackup { backup: String },
    /// The rebuilt members have no leader with a quorum yet.
    AwaitRestore { backup: String },
    /// The rebuilt cluster has a leader: the record is cleared.
    RestoredFromBackup {
        backup: String,
        revision: Option<i64>,
    },
    /// The quorum came back before anything was deleted: the record goes.
    RebuildAbandoned { backup: String },
}

impl Decision {
    /// Whether a member is being forced: membership steps and rollouts wait.
    pub fn is_recovering(&self) -> bool {
        matches!(
            self,
            Decision::Force { .. }
                | Decision::AwaitSurvivor { .. }
                | Decision::RebuildFromBackup { .. }
                | Decision::ClearingMembers { .. }
                | Decision::BootstrapFromBackup { .. }
                | Decision::AwaitRestore { .. }
        )
    }

    /// Whether no object may be applied now: the old cluster is being
    /// deleted, and a StatefulSet applied meanwhile would bring its pods
    /// back onto volumes that are going.
    pub fn holds_objects(&self) -> bool {
        matches!(
            self,
            Decision::RebuildFromBackup { .. } | Decision::ClearingMembers { .. }
        )
    }
}

/// Decides; see the module doc.
pub fn decide(s: &Situation<'_>) -> Decision {
    let answering: Vec<&EndpointStatus> =
        s.probes.iter().filter_map(|p| p.status.as_ref()).collect();
    let led = answering
        .iter()
        .filter(|st| !st.is_learner && st.leader != 0)
        .count();
    let needed = quorum(s.voters);
    if let Some(rebuild) = &s.rebuild {
        let present = s.ready_pods >= needed || led >= needed;
        return rebuild::decide(rebuild, present, led, needed);
    }
    if let Some(ordinal) = s.forcing {
        let leads_alone = s
            .probes
            .iter()
            .find(|p| p.ordinal == ordinal)
            .and_then(|p| p.status.as_ref())
            .is_some_and(|st| st.leader == st.member_id && !st.is_learner);
        return if leads_alone {
            Decision::Recovered { ordinal }
        } else {
            Decision::AwaitSurvivor { ordinal }
        };
    }
    if s.voters == 0 || s.ready_pods >= needed || led >= needed {
        return Decision::Healthy;
    }
    let Some(recovery) = s.recovery else {
        return Decision::ReportOnly {
            reachable: answering.len(),
        };
    };
    let grace = Duration::from_secs(recovery.grace_seconds().into());
    let lost_for = s.lost_for.unwrap_or_default();
    if lost_for < grace {
        return Decision::Waiting {
            remaining: grace - lost_for,
        };
    }
    match recovery.mode {
        RecoveryMode::FromSurvivor => {
            survivor(s.probes).map_or(Decision::NoSurvivor, |p| Decision::Force {
                ordinal: p.ordinal,
                raft_index: p.status.as_ref().map_or(0, |st| st.raft_index),
            })
        }
        RecoveryMode::FromLatestBackup => match rebuild::choose(s.backups, s.verify_required) {
            Ok(backup) => Decision::RebuildFromBackup {
                backup: backup.clone(),
            },
            Err(reason) => Decision::NoUsableBackup { reason },
        },
    }
}

/// The member with the most data: the highest raft index, voters before
/// learners, the lowest ordinal on a tie (so the cluster shrinks least).
pub fn survivor(probes: &[Probe]) -> Option<&Probe> {
    probes
        .iter()
        .filter(|p| p.status.is_some())
        .max_by_key(|p| {
            let st = p.status.as_ref().expect("filtered");
            (st.raft_index, !st.is_learner, std::cmp::Reverse(p.ordinal))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, leader: u64, raft_index: u64) -> EndpointStatus {
        EndpointStatus {
            member_id: id,
            leader,
            raft_index,
            raft_applied_index: raft_index,
            version: "3.6.0".into(),
            is_learner: false,
        }
    }

    fn probe(ordinal: i32, status: Option<EndpointStatus>) -> Probe {
        Probe { ordinal, status }
    }

    fn from_survivor() -> RecoverySpec {
        RecoverySpec {
            mode: RecoveryMode::FromSurvivor,
            grace_period_seconds: Some(30),
        }
    }

    fn situation<'a>(
        recovery: Option<&'a RecoverySpec>,
        probes: &'a [Probe],
        lost_for: u64,
    ) -> Situation<'a> {
        Situation {
            recovery,
            voters: 3,
            ready_pods: 0,
            probes,
            lost_for: Some(Duration::from_secs(lost_for)),
            forcing: None,
            backups: &[],
            verify_required: false,
            rebuild: None,
        }
    }

    #[test]
    fn one_member_down_of_three_keeps_the_quorum() {
        let probes = [
            probe(0, Some(status(1, 2, 10))),
            probe(1, Some(status(2, 2, 10))),
            probe(2, None),
        ];
        let spec = from_survivor();
        assert_eq!(
            decide(&situation(Some(&spec), &probes, 999)),
            Decision::Healthy
        );
    }

    #[test]
    fn without_the_opt_in_a_lost_quorum_is_only_reported() {
        let probes = [
            probe(0, Some(status(1, 0, 10))),
            probe(1, None),
            probe(2, None),
        ];
        assert_eq!(
            decide(&situation(None, &probes, 999)),
            Decision::ReportOnly { reachable: 1 }
        );
    }

    #[test]
    fn nothing_happens_within_the_grace_period() {
        let probes = [
            probe(0, Some(status(1, 0, 10))),
            probe(1, None),
            probe(2, None),
        ];
        let spec = from_survivor();
        assert_eq!(
            decide(&situation(Some(&spec), &probes, 10)),
            Decision::Waiting {
                remaining: Duration::from_secs(20)
            }
        );
    }

    #[test]
    fn the_member_with_the_highest_raft_index_is_forced() {
        let probes = [
            probe(0, Some(status(1, 0, 10))),
            probe(1, Some(status(2, 0, 12))),
            probe(2, None),
            probe(3, None),
            probe(4, None),
        ];
        let spec = from_survivor();
        assert_eq!(
            decide(&situation(Some(&spec), &probes, 31)),
            Decision::Force {
                ordinal: 1,
                raft_index: 12
            }
        );
    }

    #[test]
    fn a_voter_wins_a_tie_with_a_learner_and_the_lowest_ordinal_a_tie_of_voters() {
        let mut learner = status(3, 0, 12);
        learner.is_learner = true;
        let probes = [
            probe(0, Some(learner)),
            probe(1, Some(status(1, 0, 12))),
            probe(2, Some(status(2, 0, 12))),
        ];
        assert_eq!(survivor(&probes).map(|p| p.ordinal), Some(1));
    }

    #[test]
    fn with_no_member_answering_there_is_no_survivor() {
        let probes = [probe(0, None), probe(1, None), probe(2, None)];
        let spec = from_survivor();
        assert_eq!(
            decide(&situation(Some(&spec), &probes, 60)),
            Decision::NoSurvivor
        );
    }

    #[test]
    fn a_recovery_under_way_waits_for_the_forced_member_to_lead_alone() {
        let spec = from_survivor();
        let waiting = [probe(0, Some(status(1, 0, 10))), probe(1, None)];
        let mut s = situation(Some(&spec), &waiting, 60);
        s.forcing = Some(0);
        assert_eq!(decide(&s), Decision::AwaitSurvivor { ordinal: 0 });
        let leading = [probe(0, Some(status(1, 1, 11))), probe(1, None)];
        s.probes = &leading;
        assert_eq!(decide(&s), Decision::Recovered { ordinal: 0 });
    }

    #[test]
    fn ready_pods_the_operator_can_not_reach_keep_the_quorum() {
        // Cut off from two members the kubelet still finds Ready: nothing
        // may be deleted.
        let spec = from_survivor();
        let probes = [
            probe(0, None),
            probe(1, None),
            probe(2, Some(status(3, 0, 10))),
        ];
        let mut s = situation(Some(&spec), &probes, 999);
        s.ready_pods = 2;
        assert_eq!(decide(&s), Decision::Healthy);
    }

    #[test]
    fn a_member_that_still_names_itself_leader_alone_is_no_quorum() {
        // A leader cut off from its followers keeps naming itself until
        // it steps down; its pod is not Ready.
        let spec = from_survivor();
        let probes = [
            probe(0, Some(status(1, 1, 10))),
            probe(1, None),
            probe(2, None),
        ];
        assert_eq!(
            decide(&situation(Some(&spec), &probes, 60)),
            Decision::Force {
                ordinal: 0,
                raft_index: 10
            }
        );
    }

    #[test]
    fn voters_answering_with_a_leader_keep_the_quorum_whatever_the_readiness() {
        let probes = [
            probe(0, Some(status(1, 2, 10))),
            probe(1, Some(status(2, 2, 10))),
            probe(2, None),
        ];
        assert_eq!(decide(&situation(None, &probes, 999)), Decision::Healthy);
    }
}
