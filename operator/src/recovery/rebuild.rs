//! `FromLatestBackup`, the decision: which `EtcdBackup` a cluster that lost
//! its quorum is rebuilt from, and where a rebuild under way stands (see
//! `controller::recovery` for the I/O).
//!
//! A rebuild is recorded in `status.recovery.rebuild` before anything is
//! deleted, so an operator restarted mid-way carries on with the same
//! backup. It deletes the StatefulSet first, then every member pod and PVC
//! (phase `Deleting`); once none is left the members bootstrap from the
//! backup (`Restoring`, through the `restore` init container of
//! `spec.restore`); once voters of a quorum answer with a leader the record
//! is cleared, so a later quorum loss can be recovered from again.

use k8s_openapi::jiff::Timestamp;

use super::Decision;
use crate::crd::{BackupRebuild, RebuildPhase};

/// An `EtcdBackup` of the cluster, as far as choosing one goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupCandidate {
    /// Its name.
    pub name: String,
    /// Whether its phase is `Succeeded`.
    pub succeeded: bool,
    /// Its `Verified` condition: `None` while unknown or absent.
    pub verified: Option<bool>,
    /// When it completed (or, without that, was created).
    pub completed: Option<Timestamp>,
    /// The store revision it holds.
    pub revision: Option<i64>,
}

/// A rebuild under way, with what is left of the old cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuild<'a> {
    /// `status.recovery.rebuild`.
    pub record: &'a BackupRebuild,
    /// Whether the StatefulSet exists and is not being deleted.
    pub stateful_set: bool,
    /// Member pods and PVCs that still exist.
    pub leftovers: usize,
}

/// The newest usable backup: succeeded, not failed verification and, with
/// `verify_required` (`spec.backup.verify`), verified. Otherwise why none is.
pub fn choose(
    backups: &[BackupCandidate],
    verify_required: bool,
) -> Result<&BackupCandidate, String> {
    let succeeded: Vec<&BackupCandidate> = backups.iter().filter(|b| b.succeeded).collect();
    if succeeded.is_empty() {
        return Err(format!(
            "none of the {} EtcdBackups of this cluster has succeeded",
            backups.len()
        ));
    }
    // A backup that failed verification would fail to restore after every
    // member was deleted: never worth the risk.
    let usable = succeeded.iter().copied().filter(|b| match b.verified {
        Some(verified) => verified,
        None => !verify_required,
    });
    usable
        .max_by(|a, b| (a.completed, &a.name).cmp(&(b.completed, &b.name)))
        .ok_or_else(|| {
            if verify_required {
                format!(
                    "spec.backup.verify is set and none of the {} succeeded EtcdBackups is verified",
                    succeeded.len()
                )
            } else {
                format!(
                    "all {} succeeded EtcdBackups failed verification",
                    succeeded.len()
                )
            }
        })
}

/// Where the rebuild stands. `quorum_present`: enough member pods are Ready
/// or enough voters know a leader; `led_members`: members answering with a
/// leader; `needed`: a quorum of `spec.replicas`.
pub(super) fn decide(
    rebuild: &Rebuild<'_>,
    quorum_present: bool,
    led_members: usize,
    needed: usize,
) -> Decision {
    let backup = rebuild.record.backup_name.clone();
    match rebuild.record.phase {
        // The StatefulSet goes first: while it stands, nothing was deleted
        // yet, and a quorum that came back is worth more than the backup.
        RebuildPhase::Deleting if rebuild.stateful_set && quorum_present => {
            Decision::RebuildAbandoned { backup }
        }
        RebuildPhase::Deleting if rebuild.stateful_set || rebuild.leftovers > 0 => {
            Decision::ClearingMembers {
                backup,
                left: rebuild.leftovers,
            }
        }
        RebuildPhase::Deleting => Decision::BootstrapFromBackup { backup },
        RebuildPhase::Restoring if led_members < needed => Decision::AwaitRestore { backup },
        RebuildPhase::Restoring | RebuildPhase::Restored => Decision::RestoredFromBackup {
            backup,
            revision: rebuild.record.revision,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::{RecoveryMode, RecoverySpec, RestoreSpec};
    use crate::membership::EndpointStatus;
    use crate::recovery::{self, Probe, Situation};

    fn backup(name: &str, age_minutes: i64, verified: Option<bool>) -> BackupCandidate {
        BackupCandidate {
            name: name.into(),
            succeeded: true,
            verified,
            completed: Some(Timestamp::from_second(1_800_000_000 - age_minutes * 60).unwrap()),
            revision: Some(100 - age_minutes),
        }
    }

    fn record(phase: RebuildPhase) -> BackupRebuild {
        BackupRebuild {
            backup_name: "nightly".into(),
            revision: Some(42),
            source: RestoreSpec {
                backup_name: None,
                s3: None,
                pvc: None,
                sha256: None,
                skip_hash_check: false,
            },
            phase,
            started_at: Time(Timestamp::UNIX_EPOCH),
            completed_at: None,
        }
    }

    fn led(id: u64) -> Probe {
        Probe {
            ordinal: id as i32,
            status: Some(EndpointStatus {
                member_id: id,
                leader: 1,
                raft_index: 5,
                raft_applied_index: 5,
                version: "3.6.0".into(),
                is_learner: false,
            }),
        }
    }

    fn down(ordinal: i32) -> Probe {
        Probe {
            ordinal,
            status: None,
        }
    }

    fn from_latest_backup() -> RecoverySpec {
        RecoverySpec {
            mode: RecoveryMode::FromLatestBackup,
            grace_period_seconds: Some(30),
        }
    }

    fn lost<'a>(
        spec: &'a RecoverySpec,
        probes: &'a [Probe],
        backups: &'a [BackupCandidate],
        lost_for: u64,
    ) -> Situation<'a> {
        Situation {
            recovery: Some(spec),
            voters: 3,
            ready_pods: 0,
            probes,
            lost_for: Some(Duration::from_secs(lost_for)),
            forcing: None,
            backups,
            verify_required: false,
            rebuild: None,
        }
    }

    #[test]
    fn the_newest_succeeded_backup_is_chosen() {
        let mut failed = backup("newest-failed", 1, None);
        failed.succeeded = false;
        let backups = [backup("old", 60, None), failed, backup("recent", 5, None)];
        assert_eq!(choose(&backups, false).unwrap().name, "recent");
    }

    #[test]
    fn a_backup_that_failed_verification_is_passed_over() {
        let backups = [
            backup("older-verified", 30, Some(true)),
            backup("newer-bad", 2, Some(false)),
            backup("unchecked", 10, None),
        ];
        assert_eq!(choose(&backups, false).unwrap().name, "unchecked");
        let only_bad = [backup("bad", 2, Some(false))];
        assert!(choose(&only_bad, false)
            .unwrap_err()
            .contains("failed verification"));
    }

    #[test]
    fn with_verify_required_only_a_verified_backup_is_chosen() {
        let backups = [
            backup("verified", 30, Some(true)),
            backup("pending", 2, None),
        ];
        assert_eq!(choose(&backups, true).unwrap().name, "verified");
        let unverified = [backup("pending", 2, None)];
        assert!(choose(&unverified, true)
            .unwrap_err()
            .contains("spec.backup.verify"));
    }

    #[test]
    fn with_no_succeeded_backup_none_is_usable() {
        let mut running = backup("running", 1, None);
        running.succeeded = false;
        assert!(choose(&[running], false)
            .unwrap_err()
            .contains("none of the 1 EtcdBackups"));
        assert!(choose(&[], false).is_err());
    }

    #[test]
    fn past_the_grace_period_the_rebuild_starts_from_the_chosen_backup() {
        let spec = from_latest_backup();
        let probes = [down(0), down(1), down(2)];
        let backups = [backup("old", 60, None), backup("recent", 5, None)];
        assert_eq!(
            recovery::decide(&lost(&spec, &probes, &backups, 31)),
            Decision::RebuildFromBackup {
                backup: backups[1].clone()
            }
        );
    }

    #[test]
    fn members_with_data_do_not_stop_the_chosen_mode() {
        // Members that answer without a leader still hold data; the user
        // chose the backup over it.
        let spec = from_latest_backup();
        let mut probes = [led(1), down(1), down(2)];
        if let Some(st) = probes[0].status.as_mut() {
            st.leader = 0;
        }
        let backups = [backup("recent", 5, None)];
        assert!(matches!(
            recovery::decide(&lost(&spec, &probes, &backups, 31)),
            Decision::RebuildFromBackup { .. }
        ));
    }

    #[test]
    fn within_the_grace_period_no_backup_is_chosen() {
        let spec = from_latest_backup();
        let probes = [down(0), down(1), down(2)];
        let backups = [backup("recent", 5, None)];
        assert_eq!(
            recovery::decide(&lost(&spec, &probes, &backups, 10)),
            Decision::Waiting {
                remaining: Duration::from_secs(20)
            }
        );
    }

    #[test]
    fn without_a_usable_backup_nothing_is_deleted() {
        let spec = from_latest_backup();
        let probes = [down(0), down(1), down(2)];
        let backups = [backup("recent", 5, None)];
        let mut s = lost(&spec, &probes, &backups, 60);
        s.verify_required = true;
        assert!(matches!(
            recovery::decide(&s),
            Decision::NoUsableBackup { .. }
        ));
        assert!(!recovery::decide(&s).is_recovering());
    }

    #[test]
    fn a_rebuild_deletes_until_nothing_is_left_then_bootstraps() {
        let rec = record(RebuildPhase::Deleting);
        let mut rebuild = Rebuild {
            record: &rec,
            stateful_set: true,
            leftovers: 6,
        };
        assert_eq!(
            decide(&rebuild, false, 0, 2),
            Decision::ClearingMembers {
                backup: "nightly".into(),
                left: 6
            }
        );
        rebuild.stateful_set = false;
        rebuild.leftovers = 2;
        // Terminating pods may still look Ready: with the StatefulSet
        // gone, the deletion goes on.
        assert!(matches!(
            decide(&rebuild, true, 0, 2),
            Decision::ClearingMembers { left: 2, .. }
        ));
        rebuild.leftovers = 0;
        assert_eq!(
            decide(&rebuild, false, 0, 2),
            Decision::BootstrapFromBackup {
                backup: "nightly".into()
            }
        );
    }

    #[test]
    fn a_record_whose_quorum_came_back_before_any_deletion_is_dropped() {
        let rec = record(RebuildPhase::Deleting);
        let rebuild = Rebuild {
            record: &rec,
            stateful_set: true,
            leftovers: 6,
        };
        assert_eq!(
            decide(&rebuild, true, 3, 2),
            Decision::RebuildAbandoned {
                backup: "nightly".into()
            }
        );
    }

    #[test]
    fn a_restoring_cluster_is_done_once_a_quorum_answers_with_a_leader() {
        let rec = record(RebuildPhase::Restoring);
        let rebuild = Rebuild {
            record: &rec,
            stateful_set: true,
            leftovers: 6,
        };
        assert_eq!(
            decide(&rebuild, false, 1, 2),
            Decision::AwaitRestore {
                backup: "nightly".into()
            }
        );
        assert_eq!(
            decide(&rebuild, true, 2, 2),
            Decision::RestoredFromBackup {
                backup: "nightly".into(),
                revision: Some(42)
            }
        );
    }

    #[test]
    fn a_rebuild_under_way_goes_on_whatever_the_spec_says_now() {
        // The members are gone: dropping the opt-in can not bring them back.
        let rec = record(RebuildPhase::Restoring);
        let probes = [led(1), led(2), down(2)];
        let s = Situation {
            recovery: None,
            voters: 3,
            ready_pods: 0,
            probes: &probes,
            lost_for: None,
            forcing: None,
            backups: &[],
            verify_required: false,
            rebuild: Some(Rebuild {
                record: &rec,
                stateful_set: true,
                leftovers: 6,
            }),
        };
        assert!(matches!(
            recovery::decide(&s),
            Decision::RestoredFromBackup { .. }
        ));
    }
}
