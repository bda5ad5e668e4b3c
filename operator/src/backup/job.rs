//! The Job that takes one backup, as a pure function of the `EtcdBackup`
//! and its cluster: the cluster's image running `ferrocd-operator backup`,
//! with the operator's client certificate for a TLS cluster, the S3
//! credentials as environment variables, or the PVC mounted.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::builders::{ClusterRef, FIELD_MANAGER, MANAGED_BY_LABEL};
use crate::crd::{
    BackupDestination, EtcdClusterSpec, Retention, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY,
};
use crate::tls;

/// Label naming the `EtcdBackup` a Job and its pod belong to.
pub const BACKUP_LABEL: &str = "ferrocd.io/backup";
/// Where the PVC of a PVC destination is mounted.
pub const BACKUP_MOUNT: &str = "/backup";
/// Where the operator's client certificate is mounted.
pub const CLIENT_TLS_MOUNT: &str = "/etc/ferrocd/tls/client";
/// Where the container writes its outcome.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Attempts of a backup before it fails.
pub const BACKOFF_LIMIT: i32 = 2;
/// A backup still running after this long is failed by Kubernetes.
pub const DEADLINE_SECONDS: i64 = 3600;

/// What a backup Job is built from.
pub struct BackupJob<'a> {
    /// Name of the `EtcdBackup`.
    pub backup_name: &'a str,
    /// Owner reference to the `EtcdBackup`.
    pub owner: OwnerReference,
    /// The cluster to back up.
    pub cluster: &'a ClusterRef,
    /// Its spec (image, TLS).
    pub cluster_spec: &'a EtcdClusterSpec,
    /// Where the snapshot goes.
    pub destination: &'a BackupDestination,
    /// Retention applied after success, for scheduled backups.
    pub retention: Option<&'a Retention>,
    /// Backups the retention must keep: those the cluster's members
    /// restore from (see [`restore_sources`]).
    pub keep: Vec<String>,
}

/// The backups `cluster`'s members restore from, whose files must stay:
/// `spec.restore.backupName` and the backups of a rebuild in progress and
/// of the last one.
pub fn restore_sources(cluster: &crate::crd::EtcdCluster) -> Vec<String> {
    let restore = cluster
        .spec
        .restore
        .as_ref()
        .and_then(|r| r.backup_name.clone());
    let recovery = cluster.status.as_ref().and_then(|s| s.recovery.as_ref());
    let rebuilds = recovery
        .into_iter()
        .flat_map(|r| [&r.rebuild, &r.last_rebuild])
        .flatten()
        .map(|r| r.backup_name.clone());
    let mut names: Vec<String> = restore.into_iter().chain(rebuilds).collect();
    names.sort();
    names.dedup();
    names
}

/// Name of the Job of backup `backup_name`.
pub fn job_name(backup_name: &str) -> String {
    format!("{backup_name}-snapshot")
}

/// File name of the snapshot of backup `backup_name`, under the prefix or path.
pub fn file_name(backup_name: &str) -> String {
    format!("{backup_name}.db")
}

/// Where backup `backup_name` ends up, as the status reports it.
pub fn location(backup_name: &str, destination: &BackupDestination) -> String {
    let file = file_name(backup_name);
    match (&destination.s3, &destination.pvc) {
        (Some(s3), _) => format!("s3://{}/{}", s3.bucket, s3.key(&file)),
        (None, Some(pvc)) => format!("pvc://{}/{}", pvc.claim_name, pvc.relative_path(&file)),
        (None, None) => String::new(),
    }
}

impl BackupJob<'_> {
    /// The Job.
    pub fn build(&self) -> Job {
        let name = job_name(self.backup_name);
        let labels = BTreeMap::from([
            (BACKUP_LABEL.to_string(), self.backup_name.to_string()),
            (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
            (
                "app.kubernetes.io/component".to_string(),
                "backup".to_string(),
            ),
        ]);
        let (args, env, volumes, mounts) = self.wiring();
        let container = Container {
            name: "backup".into(),
            image: Some(self.cluster_spec.image_or_default()),
            command: Some(vec!["ferrocd-operator".into()]),
            args: Some(args),
            env: (!env.is_empty()).then_some(env),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        tool_job(
            ObjectMeta {
                name: Some(name),
                namespace: Some(self.cluster.namespace().to_string()),
                labels: Some(labels),
                owner_references: Some(vec![self.owner.clone()]),
                ..Default::default()
            },
            container,
            volumes,
        )
    }

    /// The client Service addresses the backup tries, in order: the one
    /// the operator talks to now and, while TLS is being turned on, those
    /// of the phases still to come, so that a Job created before a phase
    /// change (or retried after one) still reaches the store.
    fn endpoints(&self) -> Vec<String> {
        let mut phase = Some(self.cluster.phase());
        let mut endpoints: Vec<String> = Vec::new();
        while let Some(p) = phase {
            let endpoint = self.cluster.client_endpoint_in(p);
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
            phase = p.next().filter(|_| self.cluster_spec.tls.is_some());
        }
        endpoints
    }

    /// Arguments, environment, volumes and mounts of the container.
    fn wiring(&self) -> (Vec<String>, Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
        let mut args = vec!["backup".to_string()];
        args.extend(self.endpoints().iter().map(|e| format!("--endpoint={e}")));
        args.push(format!("--termination-log={TERMINATION_LOG}"));
        let mut env = Vec::new();
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        if let Some(tls_spec) = &self.cluster_spec.tls {
            let secret = tls::secret_names(self.cluster, tls_spec).operator_client;
            volumes.push(Volume {
                name: "client-tls".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "client-tls".into(),
                mount_path: CLIENT_TLS_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            });
            args.push(format!("--tls-dir={CLIENT_TLS_MOUNT}"));
        }
        let file = file_name(self.backup_name);
        wire_destination(
            self.destination,
            &file,
            false,
            &mut args,
            &mut env,
            &mut volumes,
            &mut mounts,
        );
        if let Some(retention) = self.retention {
            args.push(format!("--retain-cluster={}", self.cluster.name()));
            args.push(format!(
                "--retain-count={}",
                retention
                    .max_count
                    .unwrap_or(crate::crd::DEFAULT_RETENTION_COUNT)
            ));
            if let Some(age) = &retention.max_age {
                args.push(format!("--retain-age={age}"));
            }
            args.extend(self.keep.iter().map(|b| format!("--retain-keep={b}")));
        }
        (args, env, volumes, mounts)
    }
}

/// How a Job reaches the stored file `file` at `destination`: the S3 flags
/// with the credentials Secret as environment, or the PVC mounted (read
/// only when `read_only`) and `--file` on it.
pub(crate) fn wire_destination(
    destination: &BackupDestination,
    file: &str,
    read_only: bool,
    args: &mut Vec<String>,
    env: &mut Vec<EnvVar>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    if let Some(s3) = &destination.s3 {
        args.extend([
            format!("--s3-endpoint={}", s3.endpoint),
            format!("--s3-bucket={}", s3.bucket),
            format!("--s3-key={}", s3.key(file)),
            format!("--s3-region={}", s3.region_or_default()),
            format!("--s3-path-style={}", s3.force_path_style),
        ]);
        for (var, key) in [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY),
        ] {
            env.push(secret_env(var, &s3.credentials_secret, key));
        }
    } else if let Some(pvc) = &destination.pvc {
        volumes.push(Volume {
            name: "backup".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(read_only),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "backup".into(),
            mount_path: BACKUP_MOUNT.into(),
            read_only: read_only.then_some(true),
            ..Default::default()
        });
        args.push(format!("--file={BACKUP_MOUNT}/{}", pvc.relative_path(file)));
    }
}

/// A Job running `container` (a `ferrocd-operator` subcommand) once, as
/// the members run: non-root, read-only root, no capabilities, its
/// outcome in the termination message. `metadata`'s labels go on the pod too.
pub(crate) fn tool_job(metadata: ObjectMeta, container: Container, volumes: Vec<Volume>) -> Job {
    let container = Container {
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..crate::builders::restricted_container()
        }),
        ..container
    };
    let labels = metadata.labels.clone();
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            active_deadline_seconds: Some(DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(crate::builders::restricted_pod()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

pub(crate) fn secret_env(var: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: var.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
