//! `FromLatestBackup` in the reconciler: lists the cluster's `EtcdBackup`s
//! for [`recovery::decide`](crate::recovery::decide), records the chosen
//! one in `status.recovery.rebuild` (under a field manager of its own,
//! before anything is deleted), deletes the StatefulSet, member pods and
//! PVCs, moves the record on once none is left, and clears it once the
//! rebuilt cluster has a leader. The members restore the backup through
//! the `restore` init container of `spec.restore` ([`with_source`]).

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PropagationPolicy};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{publish, Context, Error, Seen};
use crate::builders::ClusterRef;
use crate::controller::backup::VERIFIED;
use crate::controller::delete_if_present;
use crate::controller::restore::{from_backup, restore_failure};
use crate::crd::{
    BackupPhase, BackupRebuild, EtcdBackup, EtcdCluster, RebuildPhase, RecoveryStatus, RestoreSpec,
};
use crate::recovery::{BackupCandidate, Decision, Rebuild};
use crate::status::RECOVERING;

/// Reason of `Recovering=True` while a member's restore fails.
const RESTORE_FAILED: &str = "RestoreFailed";
/// Grace period of the member pods deleted for a rebuild.
const WIPE_GRACE_SECONDS: u32 = 5;
/// Field manager of `status.recovery`.
pub const REBUILD_MANAGER: &str = "ferrocd-operator-rebuild";

/// The cluster with the source of a rebuild (under way, or the last one,
/// so the members' pods do not change once it is over) as its
/// `spec.restore`. During a rebuild the old member list is dropped: its
/// PVC UIDs would mark the new members' volumes as replaced.
pub fn with_source(cluster: Cow<'_, EtcdCluster>) -> Cow<'_, EtcdCluster> {
    let Some(recovery) = cluster.status.as_ref().and_then(|s| s.recovery.as_ref()) else {
        return cluster;
    };
    let under_way = recovery.rebuild.is_some();
    let Some(record) = recovery.rebuild.as_ref().or(recovery.last_rebuild.as_ref()) else {
        return cluster;
    };
    let source = record.source.clone();
    let mut owned = cluster.into_owned();
    owned.spec.restore = Some(source);
    if under_way {
        if let Some(status) = owned.status.as_mut() {
            status.members.clear();
        }
    }
    Cow::Owned(owned)
}

/// `status.recovery.rebuild` of `cluster`.
pub fn record(cluster: &EtcdCluster) -> Option<&BackupRebuild> {
    cluster.status.as_ref()?.recovery.as_ref()?.rebuild.as_ref()
}

/// The rebuild as observed: whether the old StatefulSet still stands and
/// how many member pods and PVCs are left.
pub fn observed<'a>(
    record: &'a BackupRebuild,
    cluster_ref: &ClusterRef,
    seen: &Seen,
) -> Rebuild<'a> {
    let pods = seen
        .pods
        .iter()
        .filter(|p| cluster_ref.ordinal_of_member(&p.name_any()).is_some())
        .count();
    Rebuild {
        record,
        stateful_set: seen
            .stateful_set
            .as_ref()
            .is_some_and(|sts| sts.metadata.deletion_timestamp.is_none()),
        leftovers: pods + seen.planner.pvcs.len(),
    }
}

/// The cluster's `EtcdBackup`s, and each as a candidate.
pub async fn backups<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    ctx: &Context<C>,
) -> Result<(Vec<EtcdBackup>, Vec<BackupCandidate>), Error> {
    let listed = Api::<EtcdBackup>::namespaced(ctx.client.clone(), cluster_ref.namespace())
        .list(&ListParams::default())
        .await?;
    let name = cluster.name_any();
    let backups: Vec<EtcdBackup> = listed
        .items
        .into_iter()
        .filter(|b| b.spec.cluster_name == name)
        .collect();
    let candidates = backups.iter().map(candidate).collect();
    Ok((backups, candidates))
}

fn candidate(backup: &EtcdBackup) -> BackupCandidate {
    let status = backup.status.clone().unwrap_or_default();
    let verified = status
        .conditions
        .iter()
        .find(|c| c.type_ == VERIFIED)
        .and_then(|c| match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        });
    BackupCandidate {
        name: backup.name_any(),
        succeeded: status.phase == Some(BackupPhase::Succeeded),
        verified,
        completed: status
            .completion_time
            .map(|t| t.0)
            .or_else(|| backup.metadata.creation_timestamp.clone().map(|t| t.0)),
        revision: status.revision,
    }
}

/// Carries out a rebuild decision; other decisions are left alone.
pub async fn act<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    seen: &Seen,
    decision: &Decision,
    backups: &[EtcdBackup],
    ctx: &Context<C>,
) -> Result<(), Error> {
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.recovery.clone())
        .unwrap_or_default();
    match decision {
        Decision::RebuildFromBackup { backup } => {
            let Some(chosen) = backups.iter().find(|b| b.name_any() == backup.name) else {
                return Ok(());
            };
            let restore = RestoreSpec {
                backup_name: None,
                s3: None,
                pvc: None,
                sha256: None,
                skip_hash_check: false,
            };
            let record = BackupRebuild {
                backup_name: backup.name.clone(),
                revision: backup.revision,
                source: from_backup(chosen, &restore),
                phase: RebuildPhase::Deleting,
                started_at: Time(Timestamp::now()),
                completed_at: None,
            };
            // Recorded first: an operator restarted from here on carries
            // on with this backup.
            let next = RecoveryStatus {
                rebuild: Some(record),
                last_rebuild: previous.last_rebuild,
            };
            patch_status(cluster, cluster_ref, &next, ctx).await?;
            publish(
                cluster,
                ctx,
                EventType::Warning,
                "QuorumRecoveryStarted",
                format!(
                    "quorum lost: rebuilding from EtcdBackup {} (revision {}); deleting every member pod and volume. \
                     Writes made after that backup are lost",
                    backup.name,
                    revision(backup.revision)
                ),
            )
            .await;
            delete_members(cluster_ref, seen, ctx).await?;
        }
        Decision::ClearingMembers { .. } => delete_members(cluster_ref, seen, ctx).await?,
        Decision::BootstrapFromBackup { .. } => {
            let mut next = previous;
            if let Some(record) = next.rebuild.as_mut() {
                record.phase = RebuildPhase::Restoring;
            }
            patch_status(cluster, cluster_ref, &next, ctx).await?;
        }
        Decision::RestoredFromBackup {
            backup,
            revision: at,
        } => {
            let last = previous.rebuild.map(|mut record| {
                record.phase = RebuildPhase::Restored;
                record.completed_at = Some(Time(Timestamp::now()));
                record
            });
            let next = RecoveryStatus {
                rebuild: None,
                last_rebuild: last.or(previous.last_rebuild),
            };
            patch_status(cluster, cluster_ref, &next, ctx).await?;
            publish(
                cluster,
                ctx,
                EventType::Normal,
                "QuorumRecovered",
                format!(
                    "rebuilt from EtcdBackup {backup}: back at revision {} with a leader",
                    revision(*at)
                ),
            )
            .await;
        }
        Decision::RebuildAbandoned { backup } => {
            let next = RecoveryStatus {
                rebuild: None,
                last_rebuild: previous.last_rebuild,
            };
            patch_status(cluster, cluster_ref, &next, ctx).await?;
            publish(
                cluster,
                ctx,
                EventType::Warning,
                "QuorumRecoveryAbandoned",
                format!(
                    "the quorum came back before any member was deleted: not rebuilding from EtcdBackup {backup}"
                ),
            )
            .await;
        }
        _ => {}
    }
    Ok(())
}

/// Turns the `Recovering` condition's reason into `RestoreFailed` when a
/// member's restore failed, with a Warning Event the first time: the
/// rebuild would otherwise wait without saying why.
pub async fn report_restore_failure<C>(
    cluster: &EtcdCluster,
    seen: &Seen,
    conditions: &mut [Condition],
    previous: &[Condition],
    ctx: &Context<C>,
) {
    let Some(failure) = restore_failure(&seen.pods) else {
        return;
    };
    let Some(recovering) = conditions.iter_mut().find(|c| c.type_ == RECOVERING) else {
        return;
    };
    recovering.reason = RESTORE_FAILED.into();
    recovering.message = format!("{}; restoring failed: {failure}", recovering.message);
    let reported = previous
        .iter()
        .any(|c| c.type_ == RECOVERING && c.reason == RESTORE_FAILED);
    if !reported {
        publish(
            cluster,
            ctx,
            EventType::Warning,
            RESTORE_FAILED,
            format!("rebuilding from a backup: {failure}"),
        )
        .await;
    }
}

fn revision(revision: Option<i64>) -> String {
    revision.map_or_else(|| "unknown".into(), |r| r.to_string())
}

/// Deletes the StatefulSet first (so it brings no pod back) but not its
/// pods, then every member pod not already going, then every member PVC.
async fn delete_members<C>(
    cluster_ref: &ClusterRef,
    seen: &Seen,
    ctx: &Context<C>,
) -> Result<(), Error> {
    let namespace = cluster_ref.namespace();
    if seen
        .stateful_set
        .as_ref()
        .is_some_and(|sts| sts.metadata.deletion_timestamp.is_none())
    {
        // Its pods are left to the deletions below: deleted by the
        // garbage collector they would get their full grace period, which
        // a kubelet that already started stopping them does not shorten.
        let sets = Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace);
        let orphan = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..Default::default()
        };
        delete_ignoring_absent(&sets, cluster_ref.name(), &orphan).await?;
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    // Their data is thrown away: no need to wait out the pods' grace
    // period, but the processes must still be gone before the pods are.
    let params = DeleteParams {
        grace_period_seconds: Some(WIPE_GRACE_SECONDS),
        ..Default::default()
    };
    for pod in &seen.pods {
        let name = pod.name_any();
        if cluster_ref.ordinal_of_member(&name).is_some()
            && pod.metadata.deletion_timestamp.is_none()
        {
            delete_ignoring_absent(&pods, &name, &params).await?;
        }
    }
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace);
    for &ordinal in &seen.planner.pvcs {
        delete_if_present(&pvcs, &cluster_ref.pvc_name(ordinal)).await?;
    }
    Ok(())
}

async fn delete_ignoring_absent<K>(
    api: &Api<K>,
    name: &str,
    params: &DeleteParams,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn patch_status<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    recovery: &RecoveryStatus,
    ctx: &Context<C>,
) -> Result<(), Error> {
    crate::controller::apply_cluster_status(
        &ctx.client,
        cluster,
        cluster_ref.namespace(),
        json!({ "recovery": recovery }),
        REBUILD_MANAGER,
    )
    .await
}
