//! The reconciler of `EtcdBackup`s: creates the backup's Job once, follows
//! it, and copies its outcome (the container's termination message) into
//! the status, with Events and metrics. A finished backup is never looked
//! at again.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::backup::job::{self, BackupJob, BACKUP_LABEL};
use crate::backup::{BackupReport, Outcome};
use crate::builders::{BuildError, ClusterRef, FIELD_MANAGER};
use crate::crd::{BackupPhase, EtcdBackup, EtcdBackupStatus, EtcdCluster};
use crate::watches::scoped;

/// How often a running backup is looked at besides the Job's watch events.
pub const REQUEUE_RUNNING: Duration = Duration::from_secs(10);
/// How often a backup waiting for its cluster looks again.
pub const REQUEUE_PENDING: Duration = Duration::from_secs(15);

/// The controller of the `EtcdBackup`s in `namespace` (all when `None`),
/// woken by changes of their Jobs.
pub fn controller(client: &Client, namespace: Option<&str>) -> Controller<EtcdBackup> {
    Controller::new(scoped(client, namespace), watcher::Config::default()).owns(
        scoped::<Job>(client, namespace),
        watcher::Config::default().labels(BACKUP_LABEL),
    )
}

/// What the Job and its pods say about the backup.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not finished.
    Running,
    /// Written, with its report.
    Succeeded(BackupReport),
    /// Failed for good.
    Failed {
        /// Short reason.
        reason: String,
        /// What went wrong.
        message: String,
    },
}

/// Reconciles one `EtcdBackup`.
pub async fn reconcile<C>(backup: Arc<EtcdBackup>, ctx: Arc<Context<C>>) -> Result<Action, Error> {
    let previous = backup.status.clone().unwrap_or_default();
    if previous.phase.is_some_and(BackupPhase::is_final) {
        if verify::wanted(&backup.spec, &previous) {
            return verify::reconcile(&backup, &ctx, previous).await;
        }
        return Ok(Action::await_change());
    }
    let namespace = backup
        .namespace()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let name = backup.name_any();
    let clusters = Api::<EtcdCluster>::namespaced(ctx.client.clone(), &namespace);
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    let job_name = job::job_name(&name);
    let now = Time(Timestamp::now());
    let Some(existing) = jobs.get_opt(&job_name).await? else {
        let Some(cluster) = clusters.get_opt(&backup.spec.cluster_name).await? else {
            let status = EtcdBackupStatus {
                phase: Some(BackupPhase::Pending),
                message: Some(format!(
                    "EtcdCluster {:?} not found in namespace {namespace}",
                    backup.spec.cluster_name
                )),
                ..previous
            };
            patch_status(&ctx.client, &backup, &status).await?;
            return Ok(Action::requeue(REQUEUE_PENDING));
        };
        let cluster_ref = ClusterRef::new(&cluster)?;
        let owner = backup
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        let built = BackupJob {
            backup_name: &name,
            owner,
            cluster: &cluster_ref,
            cluster_spec: &cluster.spec,
            destination: &backup.spec.destination,
            retention: backup.spec.retention.as_ref(),
            keep: job::restore_sources(&cluster),
        }
        .build();
        match jobs.create(&PostParams::default(), &built).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(error.into()),
        }
        publish(
            &ctx,
            &backup,
            EventType::Normal,
            "BackupStarted",
            format!(
                "started Job {job_name} to back up {}",
                backup.spec.cluster_name
            ),
        )
        .await;
        let status = EtcdBackupStatus {
            phase: Some(BackupPhase::Running),
            job_name: Some(job_name),
            location: Some(job::location(&name, &backup.spec.destination)),
            start_time: Some(now),
            message: None,
            ..previous
        };
        patch_status(&ctx.client, &backup, &status).await?;
        return Ok(Action::requeue(REQUEUE_RUNNING));
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().labels(&format!("{BACKUP_LABEL}={name}")))
        .await?;
    let verdict = judge(&existing, &pods.items);
    let mut status = next_status(previous, &name, &backup, &verdict, now);
    if verdict == Verdict::Running {
        status.message = stuck(&pods.items);
    }
    match &verdict {
        Verdict::Running => {}
        Verdict::Succeeded(report) => {
            ctx.metrics
                .backup_finished(&namespace, &backup.spec.cluster_name, true);
            publish(
                &ctx,
                &backup,
                EventType::Normal,
                "BackupSucceeded",
                format!(
                    "{} bytes at revision {} written to {} (sha256 {})",
                    report.size, report.revision, report.location, report.sha256
                ),
            )
            .await;
        }
        Verdict::Failed { reason, message } => {
            ctx.metrics
                .backup_finished(&namespace, &backup.spec.cluster_name, false);
            publish(&ctx, &backup, EventType::Warning, reason, message.clone()).await;
        }
    }
    patch_status(&ctx.client, &backup, &status).await?;
    Ok(match verdict {
        Verdict::Running => Action::requeue(REQUEUE_RUNNING),
        _ => Action::await_change(),
    })
}

/// Requeues a failed reconcile after a short delay.
pub fn error_policy<C>(backup: Arc<EtcdBackup>, error: &Error, ctx: Arc<Context<C>>) -> Action {
    tracing::warn!(backup = %backup.name_any(), %error, "backup reconcile failed");
    ctx.metrics.reconcile_failed(error);
    Action::requeue(REQUEUE_PENDING)
}

/// The backup's outcome from its Job and pods: the termination message of
/// the pod that succeeded, or of the last one that failed once the Job
/// gave up.
pub fn judge(job: &Job, pods: &[Pod]) -> Verdict {
    match ended(job, pods) {
        Ended::Running => Verdict::Running,
        Ended::Succeeded(message) => match message.map(|m| serde_json::from_str::<Outcome>(&m)) {
            Some(Ok(Outcome::Succeeded(report))) => Verdict::Succeeded(report),
            _ => Verdict::Failed {
                reason: "NoReport".into(),
                message: "the backup Job succeeded but left no readable report".into(),
            },
        },
        Ended::Failed { last, condition } => {
            match last.as_deref().map(serde_json::from_str::<Outcome>) {
                Some(Ok(Outcome::Failed { reason, message })) => {
                    Verdict::Failed { reason, message }
                }
                _ => Verdict::Failed {
                    reason: condition.reason.unwrap_or_else(|| "JobFailed".into()),
                    message: last
                        .or(condition.message)
                        .unwrap_or_else(|| "the backup Job failed".into()),
                },
            }
        }
    }
}

/// Where a Job of a `ferrocd-operator` subcommand is.
pub(crate) enum Ended {
    /// Not finished.
    Running,
    /// Succeeded, with the termination message of the pod that did.
    Succeeded(Option<String>),
    /// Gave up, with the last failed pod's termination message.
    Failed {
        last: Option<String>,
        condition: k8s_openapi::api::batch::v1::JobCondition,
    },
}

/// Whether `job` ended and what its pods said.
pub(crate) fn ended(job: &Job, pods: &[Pod]) -> Ended {
    let status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
            .cloned()
    };
    let message_of = |phase: &str| {
        let mut finished: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase))
            .collect();
        finished.sort_by_key(|p| p.metadata.creation_timestamp.clone());
        finished.last().and_then(|pod| termination_message(pod))
    };
    if status.succeeded.unwrap_or(0) > 0 || condition("Complete").is_some() {
        return Ended::Succeeded(message_of("Succeeded"));
    }
    if let Some(failed) = condition("Failed") {
        return Ended::Failed {
            last: message_of("Failed"),
            condition: failed,
        };
    }
    Ended::Running
}

/// Why a backup pod can not start, e.g. a missing credentials Secret
/// (`CreateContainerConfigError`) or image: what a Running backup waits on.
pub fn stuck(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            (reason != "ContainerCreating" && reason != "PodInitializing").then(|| {
                format!(
                    "{}: {reason}: {}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    waiting.message.as_deref().unwrap_or_default()
                )
            })
        })
    })
}

fn termination_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .map(|m| m.trim().to_string())
}

/// The status after `verdict`.
pub fn next_status(
    previous: EtcdBackupStatus,
    name: &str,
    backup: &EtcdBackup,
    verdict: &Verdict,
    now: Time,
) -> EtcdBackupStatus {
    let base = EtcdBackupStatus {
        job_name: Some(job::job_name(name)),
        location: previous
            .location
            .clone()
            .or_else(|| Some(job::location(name, &backup.spec.destination))),
        start_time: previous.start_time.clone().or_else(|| Some(now.clone())),
        ..previous
    };
    let condition = |type_: &str, reason: &str, message: &str| Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now.clone(),
        observed_generation: backup.metadata.generation,
    };
    match verdict {
        Verdict::Running => EtcdBackupStatus {
            phase: Some(BackupPhase::Running),
            ..base
        },
        Verdict::Succeeded(report) => EtcdBackupStatus {
            phase: Some(BackupPhase::Succeeded),
            size: i64::try_from(report.size).ok(),
            revision: Some(report.revision),
            sha256: Some(report.sha256.clone()),
            hash_kv: report.hash_kv.map(|h| i64::from(h.hash)),
            hash_kv_compact_revision: report.hash_kv.map(|h| h.compact_revision),
            location: Some(report_location(&base, report)),
            completion_time: Some(now.clone()),
            duration: Some(format!("{:.3}s", report.duration_seconds)),
            message: None,
            conditions: vec![condition("Complete", "BackupSucceeded", "snapshot written")],
            ..base
        },
        Verdict::Failed { reason, message } => EtcdBackupStatus {
            phase: Some(BackupPhase::Failed),
            completion_time: Some(now.clone()),
            message: Some(message.clone()),
            conditions: vec![condition("Failed", reason, message)],
            ..base
        },
    }
}

/// S3 locations come from the Job as `s3://bucket/key`; a PVC file's path
/// inside the pod means nothing outside it, so the `pvc://` location stays.
fn report_location(base: &EtcdBackupStatus, report: &BackupReport) -> String {
    if report.location.starts_with("s3://") {
        report.location.clone()
    } else {
        base.location
            .clone()
            .unwrap_or_else(|| report.location.clone())
    }
}

pub(crate) async fn publish<C>(
    ctx: &Context<C>,
    backup: &EtcdBackup,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Backup".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &backup.object_ref(&())).await {
        tracing::warn!(%error, "recording event failed");
    }
}

pub(crate) async fn patch_status(
    client: &Client,
    backup: &EtcdBackup,
    status: &EtcdBackupStatus,
) -> Result<(), Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let api: Api<EtcdBackup> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({
        "apiVersion": EtcdBackup::api_version(&()),
        "kind": EtcdBackup::kind(&()),
        "status": status,
    });
    api.patch_status(
        &backup.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

mod verify;
pub use verify::VERIFIED;

#[cfg(test)]
mod tests;
