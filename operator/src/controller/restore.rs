//! `spec.restore` in the reconciler: before any object is built, a
//! `backupName` is resolved into its object or file and checksum (once,
//! kept in `status.restore.source`, so the members' pods never change
//! afterwards), and a member whose restore init step failed is reported
//! in `status.restore` (condition `Restored`) and as an Event. The status
//! is applied under a field manager of its own.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::backup::job::file_name;
use crate::backup::restore_pod::RESTORE_CONTAINER;
use crate::builders::ClusterRef;
use crate::crd::{
    BackupPhase, EtcdBackup, EtcdCluster, PvcFile, RestoreSpec, RestoreStatus, S3Object,
};

/// Field manager of `status.restore`.
pub const RESTORE_MANAGER: &str = "ferrocd-operator-restore";
/// Condition type in `status.restore.conditions`.
pub const RESTORED: &str = "Restored";

/// The cluster to build objects for: with `spec.restore` resolved to an S3
/// object or PVC file. `None` while the named backup is not usable yet.
pub async fn resolve<'a, C>(
    cluster: &'a EtcdCluster,
    cluster_ref: &ClusterRef,
    ctx: &Context<C>,
) -> Result<Option<Cow<'a, EtcdCluster>>, Error> {
    let Some(restore) = &cluster.spec.restore else {
        return Ok(Some(Cow::Borrowed(cluster)));
    };
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.restore.clone())
        .unwrap_or_default();
    let source = match &previous.source {
        Some(source) => Ok(source.clone()),
        None => resolve_source(restore, cluster_ref.namespace(), ctx).await?,
    };
    let (source, condition) = match source {
        Ok(source) => {
            let failure = member_failure(cluster_ref, ctx).await?;
            let ready = cluster
                .status
                .as_ref()
                .is_some_and(|s| s.ready_replicas > 0);
            let condition = match failure {
                Some(message) => ("False", "RestoreFailed", message),
                None if ready => (
                    "True",
                    "Restored",
                    "members started from the snapshot".into(),
                ),
                None => ("Unknown", "Restoring", "members are restoring".into()),
            };
            (Some(source), condition)
        }
        Err(message) => (None, ("False", "BackupNotReady", message)),
    };
    let (status_value, reason, message) = condition;
    let next = RestoreStatus {
        source: source.clone(),
        message: (status_value == "False").then(|| message.clone()),
        conditions: vec![condition_of(
            &previous.conditions,
            status_value,
            reason,
            &message,
            cluster.metadata.generation,
        )],
    };
    if next != previous {
        if status_value == "False" {
            let event = Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(message.clone()),
                action: "Restore".into(),
                secondary: None,
            };
            if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
                tracing::warn!(%error, "recording event failed");
            }
        }
        patch_status(cluster, cluster_ref, &next, ctx).await?;
    }
    Ok(source.map(|source| {
        let mut resolved = cluster.clone();
        resolved.spec.restore = Some(source);
        Cow::Owned(resolved)
    }))
}

/// An S3 object or PVC file for `restore`; the reason it can not be had yet.
async fn resolve_source<C>(
    restore: &RestoreSpec,
    namespace: &str,
    ctx: &Context<C>,
) -> Result<Result<RestoreSpec, String>, Error> {
    let Some(name) = &restore.backup_name else {
        return Ok(Ok(restore.clone()));
    };
    let backups = Api::<EtcdBackup>::namespaced(ctx.client.clone(), namespace);
    let Some(backup) = backups.get_opt(name).await? else {
        return Ok(Err(format!("EtcdBackup {name:?} not found")));
    };
    let status = backup.status.clone().unwrap_or_default();
    if status.phase != Some(BackupPhase::Succeeded) {
        return Ok(Err(format!(
            "EtcdBackup {name:?} has not succeeded (phase {:?})",
            status.phase
        )));
    }
    Ok(Ok(from_backup(&backup, restore)))
}

/// The file a succeeded backup wrote, with its recorded checksum.
pub fn from_backup(backup: &EtcdBackup, restore: &RestoreSpec) -> RestoreSpec {
    let file = file_name(&backup.name_any());
    let destination = &backup.spec.destination;
    RestoreSpec {
        backup_name: None,
        s3: destination.s3.as_ref().map(|s3| S3Object {
            endpoint: s3.endpoint.clone(),
            bucket: s3.bucket.clone(),
            key: s3.key(&file),
            region: s3.region.clone(),
            credentials_secret: s3.credentials_secret.clone(),
            force_path_style: s3.force_path_style,
        }),
        pvc: destination.pvc.as_ref().map(|pvc| PvcFile {
            claim_name: pvc.claim_name.clone(),
            path: pvc.relative_path(&file),
        }),
        sha256: restore
            .sha256
            .clone()
            .or_else(|| backup.status.as_ref().and_then(|s| s.sha256.clone())),
        skip_hash_check: restore.skip_hash_check,
    }
}

/// `pod: message` of a member whose restore init container failed.
async fn member_failure<C>(
    cluster_ref: &ClusterRef,
    ctx: &Context<C>,
) -> Result<Option<String>, Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), cluster_ref.namespace())
        .list(&ListParams::default().labels(&cluster_ref.label_selector()))
        .await?;
    Ok(restore_failure(&pods.items))
}

/// `pod: message` of the first of `pods` whose restore init container
/// failed (now or in its last run).
pub fn restore_failure(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
        let restore = statuses.iter().find(|s| s.name == RESTORE_CONTAINER)?;
        let failed = [restore.state.as_ref(), restore.last_state.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| s.terminated.as_ref())
            .find(|t| t.exit_code != 0)?;
        let message = failed
            .message
            .clone()
            .or_else(|| failed.reason.clone())
            .unwrap_or_else(|| format!("exit code {}", failed.exit_code));
        Some(format!("{}: {}", pod.name_any(), message.trim()))
    })
}

fn condition_of(
    previous: &[Condition],
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let unchanged = previous
        .iter()
        .find(|c| c.type_ == RESTORED && c.status == status && c.reason == reason);
    Condition {
        type_: RESTORED.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: unchanged
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(Timestamp::now())),
        observed_generation: generation,
    }
}

async fn patch_status<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    status: &RestoreStatus,
    ctx: &Context<C>,
) -> Result<(), Error> {
    super::apply_cluster_status(
        &ctx.client,
        cluster,
        cluster_ref.namespace(),
        json!({ "restore": status }),
        RESTORE_MANAGER,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EtcdBackupSpec, EtcdBackupStatus};

    #[test]
    fn a_backup_resolves_to_its_file_and_recorded_checksum() {
        let spec: EtcdBackupSpec = serde_yaml::from_str(
            "{clusterName: demo, destination: {s3: {endpoint: 'http://s3:9000', bucket: b, prefix: prod, credentialsSecret: c}}}",
        )
        .unwrap();
        let mut backup = EtcdBackup::new("nightly", spec);
        backup.status = Some(EtcdBackupStatus {
            phase: Some(BackupPhase::Succeeded),
            sha256: Some("c".repeat(64)),
            ..Default::default()
        });
        let restore = RestoreSpec {
            backup_name: Some("nightly".into()),
            s3: None,
            pvc: None,
            sha256: None,
            skip_hash_check: false,
        };
        let resolved = from_backup(&backup, &restore);
        let s3 = resolved.s3.unwrap();
        assert_eq!(s3.key, "prod/nightly.db");
        assert_eq!(s3.credentials_secret, "c");
        assert_eq!(resolved.sha256, Some("c".repeat(64)));
        assert_eq!(resolved.backup_name, None);
    }
}
