//! The backup scheduler: a second controller over `EtcdCluster`s that acts
//! only on `spec.backup`. When the cron schedule is due it creates an
//! `EtcdBackup` owned by the cluster (the backup reconciler takes it from
//! there), deletes the finished backups the retention lets go, and reports
//! the schedule in `status.backup`, applied under a field manager of its
//! own so the cluster reconciler's status never erases it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::backup::schedule::{self, Decision, Schedule};
use crate::builders::BuildError;
use crate::crd::{BackupPhase, EtcdBackup, EtcdBackupSpec, EtcdCluster, ScheduledBackupStatus};
use crate::watches::scoped;

/// Label on scheduled `EtcdBackup`s naming their cluster.
pub const SCHEDULED_FOR_LABEL: &str = "ferrocd.io/scheduled-for";
/// Field manager of `status.backup`.
pub const SCHEDULER_MANAGER: &str = "ferrocd-operator-backup-scheduler";
/// Longest sleep between two looks at a schedule.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// The scheduler over the `EtcdCluster`s in `namespace` (all when `None`),
/// woken by their scheduled backups too.
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<EtcdCluster> {
    Controller::new(scoped(client, namespace), watcher::Config::default()).owns(
        scoped::<EtcdBackup>(client, namespace),
        watcher::Config::default().labels(SCHEDULED_FOR_LABEL),
    )
}

/// Runs the schedule of one cluster.
pub async fn reconcile<C>(
    cluster: Arc<EtcdCluster>,
    ctx: Arc<Context<C>>,
) -> Result<Action, Error> {
    let Some(spec) = &cluster.spec.backup else {
        return Ok(Action::await_change());
    };
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cluster
        .namespace()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let name = cluster.name_any();
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.backup.clone())
        .unwrap_or_default();
    let schedule: Schedule = match spec.schedule.parse() {
        Ok(schedule) => schedule,
        Err(error) => {
            let status = ScheduledBackupStatus {
                message: Some(error.to_string()),
                ..previous
            };
            patch_status(&ctx.client, &cluster, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let backups_api = Api::<EtcdBackup>::namespaced(ctx.client.clone(), &namespace);
    let backups = backups_api
        .list(&ListParams::default().labels(&format!("{SCHEDULED_FOR_LABEL}={name}")))
        .await?
        .items;
    let now = Timestamp::now();
    let newest_scheduled = backups
        .iter()
        .filter_map(|b| schedule::scheduled_time(&name, &b.name_any()))
        .max();
    let last = previous
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .max(newest_scheduled);
    let since = cluster
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let mut status = ScheduledBackupStatus {
        message: None,
        ..previous
    };
    let decision = if spec.suspend {
        Decision::Wait(MAX_WAIT)
    } else {
        schedule.decide(last, since, now)
    };
    if let Decision::Run(at) = decision {
        let backup_name = schedule::backup_name(&name, at);
        let mut backup = EtcdBackup::new(
            &backup_name,
            EtcdBackupSpec {
                cluster_name: name.clone(),
                destination: spec.destination.clone(),
                retention: Some(spec.retention.clone()),
                verify: spec.verify,
            },
        );
        backup.metadata.namespace = Some(namespace.clone());
        backup.metadata.labels = Some([(SCHEDULED_FOR_LABEL.to_string(), name.clone())].into());
        backup.metadata.owner_references = cluster.controller_owner_ref(&()).map(|o| vec![o]);
        match backups_api.create(&PostParams::default(), &backup).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(error.into()),
        }
        status.last_schedule_time = Some(Time(at));
    }
    let finished: Vec<(String, Timestamp)> = backups
        .iter()
        .filter(|b| {
            b.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(BackupPhase::is_final)
        })
        .filter_map(|b| {
            Some((
                b.name_any(),
                schedule::scheduled_time(&name, &b.name_any())?,
            ))
        })
        .collect();
    // The backups the members restore from stay, as their files do.
    let keep = crate::backup::job::restore_sources(&cluster);
    match schedule::expired(&finished, &spec.retention, now) {
        Ok(expired) => {
            for old in expired.into_iter().filter(|b| !keep.contains(b)) {
                match backups_api.delete(&old, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Err(error) => status.message = Some(error.to_string()),
    }
    if let Some(success) = backups
        .iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Succeeded))
        .max_by_key(|b| schedule::scheduled_time(&name, &b.name_any()))
    {
        let done = success.status.clone().unwrap_or_default();
        status.last_successful_backup = Some(success.name_any());
        status.last_success_time = done.completion_time;
        status.last_success_location = done.location;
        status.last_success_sha256 = done.sha256;
    }
    if Some(&status) != cluster.status.as_ref().and_then(|s| s.backup.as_ref()) {
        patch_status(&ctx.client, &cluster, &status).await?;
    }
    Ok(Action::requeue(match decision {
        Decision::Run(_) => Duration::from_secs(5),
        Decision::Wait(wait) => wait.min(MAX_WAIT),
    }))
}

/// Requeues a failed schedule run after a short delay.
pub fn error_policy<C>(cluster: Arc<EtcdCluster>, error: &Error, ctx: Arc<Context<C>>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "backup schedule failed");
    ctx.metrics.reconcile_failed(error);
    Action::requeue(Duration::from_secs(30))
}

async fn patch_status(
    client: &Client,
    cluster: &EtcdCluster,
    status: &ScheduledBackupStatus,
) -> Result<(), Error> {
    super::apply_cluster_status(
        client,
        cluster,
        &cluster.namespace().unwrap_or_default(),
        json!({ "backup": status }),
        SCHEDULER_MANAGER,
    )
    .await
}
