//! The recovery step of a reconcile: asks each member pod for its status
//! when the store shows no leader, lets [`recovery::decide`] choose, and
//! carries the choice out: names the survivor in the bootstrap ConfigMap
//! (its pod starts with `--force-new-cluster`, see
//! `builders::CONFIG_FORCE_NEW_CLUSTER_MEMBER`), restarts it, deletes the
//! other members' pods and volumes; once the survivor leads alone, clears
//! the ConfigMap entry and leaves the growing back to the planner.
//! Reports the `QuorumLost` and `Recovering` conditions and Events.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use serde_json::json;

use super::{delete_if_present, Context, Error, EtcdConnector, Seen};
use crate::builders::{ClusterRef, CONFIG_FORCE_NEW_CLUSTER_MEMBER};
use crate::crd::{BackupRebuild, EtcdCluster, RecoveryMode};
use crate::membership::{EtcdApi, STATUS_TIMEOUT};
use crate::recovery::{self, Decision, Probe, Situation};
use crate::status::{self, QUORUM_LOST, RECOVERING};

mod rebuild;
pub(super) use rebuild::with_source;

/// Field manager of the ConfigMap entry naming the forced member, apart
/// from the operator's own so that its applies leave the entry alone.
const FIELD_MANAGER: &str = "ferrocd-operator-recovery";
/// Requeue interval while the quorum is lost or a recovery runs.
pub const REQUEUE_RECOVERING: Duration = Duration::from_secs(5);

/// What the step decided, and the conditions to report.
pub(super) struct Outcome {
    pub decision: Decision,
    pub conditions: Vec<Condition>,
}

impl Outcome {
    /// How soon to look again, if sooner than the plan says.
    pub fn requeue(&self) -> Option<Duration> {
        // Without the opt-in, or with nothing to rebuild from, nothing
        // will happen sooner than the plan looks again anyway.
        let acting = !matches!(
            self.decision,
            Decision::Healthy
                | Decision::ReportOnly { .. }
                | Decision::NoSurvivor
                | Decision::NoUsableBackup { .. }
        );
        acting.then_some(REQUEUE_RECOVERING)
    }
}

/// Runs the recovery step; `None` when there is nothing to look at (no
/// StatefulSet, or a cluster that never formed, and no rebuild under way).
pub(super) async fn step<C: EtcdConnector>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    seen: &Seen,
    etcd: Option<&C::Api>,
    ctx: &Context<C>,
) -> Result<Option<Outcome>, Error> {
    let previous = cluster.status.clone().unwrap_or_default();
    if let Some(record) = rebuild::record(cluster) {
        let outcome = rebuild_step(cluster, cluster_ref, record, seen, etcd, ctx).await?;
        return Ok(Some(outcome));
    }
    let (Some(replicas), Some(etcd), Some(_)) = (
        seen.planner.stateful_set_replicas,
        etcd,
        &previous.cluster_id,
    ) else {
        return Ok(None);
    };
    let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), cluster_ref.namespace());
    let forcing = config_maps
        .get_opt(&cluster_ref.config_map_name())
        .await?
        .and_then(|cm| cm.data?.remove(CONFIG_FORCE_NEW_CLUSTER_MEMBER))
        .and_then(|name| cluster_ref.ordinal_of_member(&name));
    let led = seen.store.as_ref().and_then(|s| s.leader()).is_some();
    let mut backups = (Vec::new(), Vec::new());
    let decision = if forcing.is_none() && led {
        Decision::Healthy
    } else {
        let probes = probe(cluster_ref, replicas, etcd).await;
        let now = Timestamp::now();
        let lost_for = previous
            .conditions
            .iter()
            .find(|c| c.type_ == QUORUM_LOST && c.status == "True")
            .and_then(|c| now.duration_since(c.last_transition_time.0).try_into().ok());
        let voters = previous.members.iter().filter(|m| !m.is_learner).count();
        let from_backup = cluster
            .spec
            .recovery
            .as_ref()
            .is_some_and(|r| r.mode == RecoveryMode::FromLatestBackup);
        if from_backup {
            backups = rebuild::backups(cluster, cluster_ref, ctx).await?;
        }
        recovery::decide(&Situation {
            recovery: cluster.spec.recovery.as_ref(),
            voters: if voters == 0 {
                replicas as usize
            } else {
                voters
            },
            ready_pods: seen.ready_pods.len(),
            probes: &probes,
            lost_for,
            forcing,
            backups: &backups.1,
            verify_required: cluster.spec.backup.as_ref().is_some_and(|b| b.verify),
            rebuild: None,
        })
    };
    act(cluster, cluster_ref, replicas, &decision, ctx).await?;
    rebuild::act(cluster, cluster_ref, seen, &decision, &backups.0, ctx).await?;
    if let Decision::NoUsableBackup { reason } = &decision {
        // Once per spell without a backup, not at every look.
        let reported = previous
            .conditions
            .iter()
            .any(|c| c.type_ == RECOVERING && c.reason == "NoUsableBackup");
        if !reported {
            publish(
                cluster,
                ctx,
                EventType::Warning,
                "NoUsableBackup",
                format!("quorum lost and spec.recovery.mode is FromLatestBackup, but {reason}: nothing is deleted"),
            )
            .await;
        }
    }
    let conditions = conditions(cluster, cluster_ref, &decision, &previous.conditions);
    Ok(Some(Outcome {
        decision,
        conditions,
    }))
}

/// The recovery step while a rebuild from a backup is under way.
async fn rebuild_step<C: EtcdConnector>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    record: &BackupRebuild,
    seen: &Seen,
    etcd: Option<&C::Api>,
    ctx: &Context<C>,
) -> Result<Outcome, Error> {
    let previous = cluster
        .status
        .as_ref()
        .map_or(&[][..], |s| &s.conditions[..]);
    // The old cluster may be gone: voters are the ones it comes back with.
    let replicas = cluster.spec.replicas;
    let probes = match etcd {
        Some(etcd) => probe(cluster_ref, replicas, etcd).await,
        None => Vec::new(),
    };
    let decision = recovery::decide(&Situation {
        recovery: cluster.spec.recovery.as_ref(),
        voters: replicas as usize,
        ready_pods: seen.ready_pods.len(),
        probes: &probes,
        lost_for: None,
        forcing: None,
        backups: &[],
        verify_required: false,
        rebuild: Some(rebuild::observed(record, cluster_ref, seen)),
    });
    rebuild::act(cluster, cluster_ref, seen, &decision, &[], ctx).await?;
    let mut conditions = conditions(cluster, cluster_ref, &decision, previous);
    if matches!(decision, Decision::AwaitRestore { .. }) {
        rebuild::report_restore_failure(cluster, seen, &mut conditions, previous, ctx).await;
    }
    Ok(Outcome {
        decision,
        conditions,
    })
}

/// Status of every member pod, each asked directly (the client Service
/// lists only ready pods, and none is ready without a quorum).
async fn probe(cluster: &ClusterRef, replicas: i32, etcd: &impl EtcdApi) -> Vec<Probe> {
    futures::future::join_all((0..replicas).map(|ordinal| async move {
        let url = cluster.client_url(ordinal);
        let status = tokio::time::timeout(STATUS_TIMEOUT, etcd.status(&url))
            .await
            .ok()
            .and_then(Result::ok);
        Probe { ordinal, status }
    }))
    .await
}

async fn act<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    replicas: i32,
    decision: &Decision,
    ctx: &Context<C>,
) -> Result<(), Error> {
    let namespace = cluster_ref.namespace();
    match decision {
        Decision::Force {
            ordinal,
            raft_index,
        } => {
            let survivor = cluster_ref.member_name(*ordinal);
            name_forced_member(cluster_ref, &survivor, ctx).await?;
            let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
            let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace);
            // The other members' data would give their pods identities the
            // new cluster no longer has: they come back empty and join.
            for other in (0..replicas).filter(|o| o != ordinal) {
                delete_if_present(&pvcs, &cluster_ref.pvc_name(other)).await?;
                delete_if_present(&pods, &cluster_ref.member_name(other)).await?;
            }
            // Restarted, the survivor reads the ConfigMap entry.
            delete_if_present(&pods, &survivor).await?;
            publish(
                cluster,
                ctx,
                EventType::Warning,
                "QuorumRecoveryStarted",
                format!(
                    "quorum lost: restarting {survivor} (raft index {raft_index}, the most data of the reachable members) \
                     with --force-new-cluster; deleting the other members' pods and volumes"
                ),
            )
            .await;
        }
        Decision::Recovered { ordinal } => {
            name_forced_member(cluster_ref, "", ctx).await?;
            publish(
                cluster,
                ctx,
                EventType::Normal,
                "QuorumRecovered",
                format!(
                    "{} leads as the only member; growing back through learners",
                    cluster_ref.member_name(*ordinal)
                ),
            )
            .await;
        }
        _ => {}
    }
    Ok(())
}

/// Writes the ConfigMap entry naming the member to force (empty: none).
async fn name_forced_member<C>(
    cluster_ref: &ClusterRef,
    member: &str,
    ctx: &Context<C>,
) -> Result<(), Error> {
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), cluster_ref.namespace());
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": cluster_ref.config_map_name() },
        "data": { CONFIG_FORCE_NEW_CLUSTER_MEMBER: member },
    });
    api.patch(
        &cluster_ref.config_map_name(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish<C>(
    cluster: &EtcdCluster,
    ctx: &Context<C>,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "RecoverQuorum".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "recording event failed");
    }
}

/// The `QuorumLost` and `Recovering` conditions for `decision`.
fn conditions(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    decision: &Decision,
    previous: &[Condition],
) -> Vec<Condition> {
    let now = Time(Timestamp::now());
    let generation = cluster.metadata.generation;
    let name = |o: &i32| cluster_ref.member_name(*o);
    let (lost, lost_reason, lost_message) = match decision {
        Decision::Healthy
        | Decision::Recovered { .. }
        | Decision::RestoredFromBackup { .. }
        | Decision::RebuildAbandoned { .. } => (
            false,
            "QuorumPresent",
            "a quorum of member pods is Ready, or of voters knows a leader".to_string(),
        ),
        Decision::ReportOnly { reachable } => (
            true,
            "NoRecoveryConfigured",
            format!(
                "fewer member pods than a quorum are Ready and fewer voters than a quorum know a leader \
                 ({reachable} of the member pods answer); \
                 spec.recovery is not set, so nothing is done automatically: bring members back, \
                 or set spec.recovery.mode: FromSurvivor or FromLatestBackup"
            ),
        ),
        Decision::Waiting { remaining } => (
            true,
            "GracePeriod",
            format!(
                "the quorum is lost; recovery starts in {}s unless it comes back",
                remaining.as_secs()
            ),
        ),
        Decision::NoSurvivor => (
            true,
            "NoSurvivor",
            "no member answers: nothing to rebuild from".into(),
        ),
        Decision::NoUsableBackup { reason } => (
            true,
            "NoUsableBackup",
            format!("no backup to rebuild from: {reason}"),
        ),
        Decision::Force { ordinal, .. } | Decision::AwaitSurvivor { ordinal } => (
            true,
            "Recovering",
            format!("rebuilding from {}", name(ordinal)),
        ),
        Decision::RebuildFromBackup { .. }
        | Decision::ClearingMembers { .. }
        | Decision::BootstrapFromBackup { .. }
        | Decision::AwaitRestore { .. } => (
            true,
            "Recovering",
            format!("rebuilding from EtcdBackup {}", backup_of(decision)),
        ),
    };
    let mut out = vec![status::condition_of(
        QUORUM_LOST,
        lost,
        lost_reason,
        lost_message,
        generation,
        previous,
        &now,
    )];
    let recovering = match decision {
        Decision::Force { ordinal, .. } | Decision::AwaitSurvivor { ordinal } => Some((
            true,
            "ForcingSurvivor",
            format!(
                "{} restarts with --force-new-cluster as the only member",
                name(ordinal)
            ),
        )),
        Decision::Recovered { ordinal } => Some((
            false,
            "Recovered",
            format!(
                "{} leads as the only member; the cluster grows back through learners",
                name(ordinal)
            ),
        )),
        Decision::NoUsableBackup { reason } => Some((
            false,
            "NoUsableBackup",
            format!("{reason}; nothing was deleted, looking again later"),
        )),
        Decision::RebuildFromBackup { .. }
        | Decision::ClearingMembers { .. }
        | Decision::BootstrapFromBackup { .. }
        | Decision::AwaitRestore { .. } => {
            let step = match decision {
                Decision::RebuildFromBackup { .. } | Decision::ClearingMembers { .. } => {
                    "deleting every member pod and volume"
                }
                _ => "the members bootstrap from it",
            };
            Some((
                true,
                "RestoringFromBackup",
                format!("rebuilding from EtcdBackup {}: {step}", backup_of(decision)),
            ))
        }
        Decision::RestoredFromBackup { backup, revision } => Some((
            false,
            "Recovered",
            format!(
                "rebuilt from EtcdBackup {backup} at revision {}; writes made after it are lost",
                revision.map_or_else(|| "unknown".into(), |r| r.to_string())
            ),
        )),
        Decision::RebuildAbandoned { backup } => Some((
            false,
            "QuorumReturned",
            format!("the quorum came back before any member was deleted; EtcdBackup {backup} was not used"),
        )),
        // No member is being forced and the store leads with a quorum,
        // but the condition still says a recovery runs: the reconcile
        // that cleared the forced member (or the rebuild record) did not
        // get to write its status (a later step failed), or this look
        // read the object before that write. The recovery is over all the same.
        Decision::Healthy if is_true(previous, RECOVERING) => Some((
            false,
            "Recovered",
            match last_rebuild(cluster) {
                Some(last) => format!(
                    "rebuilt from EtcdBackup {} at revision {}; writes made after it are lost",
                    last.backup_name,
                    last.revision.map_or_else(|| "unknown".into(), |r| r.to_string())
                ),
                None => "the cluster has its quorum again and no member is being forced".to_string(),
            },
        )),
        _ => None,
    };
    match recovering {
        Some((status, reason, message)) => out.push(status::condition_of(
            RECOVERING, status, reason, message, generation, previous, &now,
        )),
        None => out.extend(previous.iter().filter(|c| c.type_ == RECOVERING).cloned()),
    }
    out
}

/// The rebuild that ended last, if the recovery that just ended was one:
/// its condition still says it restores from a backup.
fn last_rebuild(cluster: &EtcdCluster) -> Option<&BackupRebuild> {
    let status = cluster.status.as_ref()?;
    let rebuilding = status.conditions.iter().any(|c| {
        c.type_ == RECOVERING
            && c.status == "True"
            && matches!(c.reason.as_str(), "RestoringFromBackup" | "RestoreFailed")
    });
    rebuilding
        .then_some(status.recovery.as_ref()?.last_rebuild.as_ref())
        .flatten()
}

/// The backup a rebuild decision names.
fn backup_of(decision: &Decision) -> &str {
    match decision {
        Decision::RebuildFromBackup { backup } => &backup.name,
        Decision::ClearingMembers { backup, .. }
        | Decision::BootstrapFromBackup { backup }
        | Decision::AwaitRestore { backup }
        | Decision::RestoredFromBackup { backup, .. }
        | Decision::RebuildAbandoned { backup } => backup,
        _ => "",
    }
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> (EtcdCluster, ClusterRef) {
        let cluster: EtcdCluster = serde_json::from_value(json!({
            "apiVersion": "ferrocd.io/v1alpha1",
            "kind": "EtcdCluster",
            "metadata": { "name": "c", "namespace": "ns", "uid": "u-1", "generation": 2 },
            "spec": { "replicas": 3 }
        }))
        .unwrap();
        let cluster_ref = ClusterRef::new(&cluster).unwrap();
        (cluster, cluster_ref)
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_recovery_whose_end_was_not_recorded_ends_at_the_next_look() {
        let (cluster, cluster_ref) = cluster();
        let forcing = conditions(
            &cluster,
            &cluster_ref,
            &Decision::AwaitSurvivor { ordinal: 0 },
            &[],
        );
        assert_eq!(find(&forcing, RECOVERING).reason, "ForcingSurvivor");
        // The reconcile that saw the survivor lead alone cleared the
        // forced member but its status was never written: the next one
        // finds the store healthy and the old condition.
        let next = conditions(&cluster, &cluster_ref, &Decision::Healthy, &forcing);
        let recovering = find(&next, RECOVERING);
        assert_eq!(
            (recovering.status.as_str(), recovering.reason.as_str()),
            ("False", "Recovered")
        );
        assert_eq!(find(&next, QUORUM_LOST).status, "False");
        // Healthy with no recovery behind it: the condition stays as it was.
        let later = conditions(&cluster, &cluster_ref, &Decision::Healthy, &next);
        assert_eq!(find(&later, RECOVERING), recovering);
        let never = conditions(&cluster, &cluster_ref, &Decision::Healthy, &[]);
        assert!(never.iter().all(|c| c.type_ != RECOVERING));
    }

    #[test]
    fn a_rebuild_whose_end_was_read_late_still_names_its_backup() {
        let (mut cluster, cluster_ref) = cluster();
        let restoring = conditions(
            &cluster,
            &cluster_ref,
            &Decision::AwaitRestore {
                backup: "nightly".into(),
            },
            &[],
        );
        // The record was already cleared into lastRebuild, but the
        // Recovering condition read is still the one of the rebuild.
        cluster.status = Some(crate::crd::EtcdClusterStatus {
            conditions: restoring.clone(),
            recovery: Some(
                serde_json::from_value(json!({"lastRebuild": {
                    "backupName": "nightly", "revision": 7, "phase": "Restored",
                    "startedAt": "2026-01-01T00:00:00Z",
                    "source": {"pvc": {"claimName": "b", "path": "x.db"}},
                }}))
                .unwrap(),
            ),
            ..Default::default()
        });
        let next = conditions(&cluster, &cluster_ref, &Decision::Healthy, &restoring);
        let recovering = find(&next, RECOVERING);
        assert_eq!(
            (recovering.status.as_str(), recovering.reason.as_str()),
            ("False", "Recovered")
        );
        assert!(
            recovering.message.contains("nightly at revision 7"),
            "{}",
            recovering.message
        );
    }
}
