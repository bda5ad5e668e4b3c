//! Verification of a succeeded backup with `spec.verify`: the reconciler
//! creates the verify Job once, follows it, and records its outcome as the
//! `Verified` condition (Unknown while it runs, then True or False) with
//! an Event, a failure also in `ferrocd_operator_backup_verify_failures_total`.
//! A backup whose `Verified` condition is True or False is never verified again.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::{ended, patch_status, publish, Ended, REQUEUE_RUNNING};
use crate::backup::verify::{VerifyOutcome, VerifyReport};
use crate::backup::verify_job::{self, VerifyJob};
use crate::backup::HashKvRecord;
use crate::builders::BuildError;
use crate::controller::{Context, Error};
use crate::crd::{
    BackupPhase, EtcdBackup, EtcdBackupSpec, EtcdBackupStatus, EtcdCluster, EtcdClusterSpec,
};

/// Type of the condition a verification sets.
pub const VERIFIED: &str = "Verified";

/// What the verify Job and its pods say.
#[derive(Debug, Clone, PartialEq)]
pub enum VerifyVerdict {
    /// Not finished.
    Running,
    /// The backup restores and is the one recorded.
    Verified(VerifyReport),
    /// It is not, or could not be checked.
    Failed {
        /// Short reason.
        reason: String,
        /// What went wrong.
        message: String,
    },
}

/// Whether a finished backup still needs verifying: it asked for it,
/// succeeded, and has no final `Verified` condition yet.
pub fn wanted(spec: &EtcdBackupSpec, status: &EtcdBackupStatus) -> bool {
    spec.verify
        && status.phase == Some(BackupPhase::Succeeded)
        && !status
            .conditions
            .iter()
            .any(|c| c.type_ == VERIFIED && c.status != "Unknown")
}

/// One step of the verification of `backup`.
pub async fn reconcile<C>(
    backup: &EtcdBackup,
    ctx: &Context<C>,
    previous: EtcdBackupStatus,
) -> Result<Action, Error> {
    let namespace = backup
        .namespace()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let name = backup.name_any();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    let now = Time(Timestamp::now());
    let generation = backup.metadata.generation;
    let Some(job) = jobs.get_opt(&verify_job::job_name(&name)).await? else {
        let (Some(sha256), Some(revision)) = (previous.sha256.clone(), previous.revision) else {
            let verdict = VerifyVerdict::Failed {
                reason: "NothingRecorded".into(),
                message: "the backup recorded no sha256 or revision to verify".into(),
            };
            return finish(backup, ctx, previous, &verdict, now).await;
        };
        let clusters = Api::<EtcdCluster>::namespaced(ctx.client.clone(), &namespace);
        // The cluster's image holds both binaries; a deleted cluster's
        // backups are verified with the operator's default image.
        let image = match clusters.get_opt(&backup.spec.cluster_name).await? {
            Some(cluster) => cluster.spec.image_or_default(),
            None => EtcdClusterSpec::default().image_or_default(),
        };
        let owner = backup
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        let built = VerifyJob {
            backup_name: &name,
            namespace: &namespace,
            owner,
            image,
            destination: &backup.spec.destination,
            sha256: &sha256,
            revision,
            hash_kv: recorded_hash_kv(&previous),
        }
        .build();
        match jobs.create(&PostParams::default(), &built).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(error.into()),
        }
        publish(
            ctx,
            backup,
            EventType::Normal,
            "VerifyStarted",
            format!(
                "started Job {} to verify the backup",
                verify_job::job_name(&name)
            ),
        )
        .await;
        let condition = Condition {
            type_: VERIFIED.into(),
            status: "Unknown".into(),
            reason: "Verifying".into(),
            message: "the verify Job restores the backup into a scratch directory".into(),
            last_transition_time: now,
            observed_generation: generation,
        };
        patch_status(&ctx.client, backup, &with_condition(previous, condition)).await?;
        return Ok(Action::requeue(REQUEUE_RUNNING));
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().labels(&verify_job::pod_selector(&name)))
        .await?;
    let verdict = judge(&job, &pods.items);
    if verdict == VerifyVerdict::Running {
        return Ok(Action::requeue(REQUEUE_RUNNING));
    }
    finish(backup, ctx, previous, &verdict, now).await
}

/// The HashKV the backup recorded, if it recorded a well-formed one.
fn recorded_hash_kv(status: &EtcdBackupStatus) -> Option<HashKvRecord> {
    Some(HashKvRecord {
        hash: u32::try_from(status.hash_kv?).ok()?,
        compact_revision: status.hash_kv_compact_revision?,
    })
}

async fn finish<C>(
    backup: &EtcdBackup,
    ctx: &Context<C>,
    previous: EtcdBackupStatus,
    verdict: &VerifyVerdict,
    now: Time,
) -> Result<Action, Error> {
    let condition = verified_condition(verdict, backup.metadata.generation, now);
    match verdict {
        VerifyVerdict::Running => return Ok(Action::requeue(REQUEUE_RUNNING)),
        VerifyVerdict::Verified(_) => {
            publish(
                ctx,
                backup,
                EventType::Normal,
                "BackupVerified",
                condition.message.clone(),
            )
            .await;
        }
        VerifyVerdict::Failed { reason, message } => {
            ctx.metrics.backup_verify_failed(
                &backup.namespace().unwrap_or_default(),
                &backup.spec.cluster_name,
            );
            publish(ctx, backup, EventType::Warning, reason, message.clone()).await;
        }
    }
    patch_status(&ctx.client, backup, &with_condition(previous, condition)).await?;
    Ok(Action::await_change())
}

/// The verification's outcome from its Job and pods.
pub fn judge(job: &Job, pods: &[Pod]) -> VerifyVerdict {
    match ended(job, pods) {
        Ended::Running => VerifyVerdict::Running,
        Ended::Succeeded(message) => {
            match message.map(|m| serde_json::from_str::<VerifyOutcome>(&m)) {
                Some(Ok(VerifyOutcome::Verified(report))) => VerifyVerdict::Verified(report),
                _ => VerifyVerdict::Failed {
                    reason: "NoReport".into(),
                    message: "the verify Job succeeded but left no readable report".into(),
                },
            }
        }
        Ended::Failed { last, condition } => {
            match last.as_deref().map(serde_json::from_str::<VerifyOutcome>) {
                Some(Ok(VerifyOutcome::Failed { reason, message })) => {
                    VerifyVerdict::Failed { reason, message }
                }
                _ => VerifyVerdict::Failed {
                    reason: condition.reason.unwrap_or_else(|| "JobFailed".into()),
                    message: last
                        .or(condition.message)
                        .unwrap_or_else(|| "the verify Job failed".into()),
                },
            }
        }
    }
}

/// The `Verified` condition a finished verification sets.
pub fn verified_condition(
    verdict: &VerifyVerdict,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let (status, reason, message) = match verdict {
        VerifyVerdict::Running => (
            "Unknown",
            "Verifying".to_string(),
            "the verify Job runs".to_string(),
        ),
        VerifyVerdict::Verified(report) => ("True", "Verified".to_string(), report.summary()),
        VerifyVerdict::Failed { reason, message } => ("False", reason.clone(), message.clone()),
    };
    Condition {
        type_: VERIFIED.into(),
        status: status.into(),
        reason,
        message,
        last_transition_time: now,
        observed_generation: generation,
    }
}

/// `status` with `condition` in place of any earlier one of its type.
pub fn with_condition(mut status: EtcdBackupStatus, condition: Condition) -> EtcdBackupStatus {
    status.conditions.retain(|c| c.type_ != condition.type_);
    status.conditions.push(condition);
    status
}
