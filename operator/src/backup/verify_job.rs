//! The Job that verifies one succeeded backup (`spec.verify` of an
//! `EtcdBackup`), as a pure function: the cluster's image running
//! `ferrocd-operator verify-backup` against the stored snapshot with the
//! SHA-256 and revision the backup recorded, a scratch `emptyDir` to
//! restore into, and the S3 credentials or the PVC (read-only).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::job::{file_name, tool_job, wire_destination, BACKUP_LABEL, TERMINATION_LOG};
use super::HashKvRecord;
use crate::builders::{FIELD_MANAGER, MANAGED_BY_LABEL};
use crate::crd::BackupDestination;

/// `app.kubernetes.io/component` of verify Jobs and their pods.
pub const VERIFY_COMPONENT: &str = "backup-verify";
/// Where the scratch volume is mounted.
pub const SCRATCH_MOUNT: &str = "/scratch";

/// What a verify Job is built from.
pub struct VerifyJob<'a> {
    /// Name of the `EtcdBackup`.
    pub backup_name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Owner reference to the `EtcdBackup`.
    pub owner: OwnerReference,
    /// The image (the cluster's: it holds `ferrocd` and `ferrocd-operator`).
    pub image: String,
    /// Where the backup was written.
    pub destination: &'a BackupDestination,
    /// SHA-256 the backup recorded.
    pub sha256: &'a str,
    /// Revision the backup recorded.
    pub revision: i64,
    /// HashKV the backup recorded.
    pub hash_kv: Option<HashKvRecord>,
}

/// Name of the verify Job of backup `backup_name`.
pub fn job_name(backup_name: &str) -> String {
    format!("{backup_name}-verify")
}

/// Label selector of the verify pods of backup `backup_name`.
pub fn pod_selector(backup_name: &str) -> String {
    format!("{BACKUP_LABEL}={backup_name},app.kubernetes.io/component={VERIFY_COMPONENT}")
}

impl VerifyJob<'_> {
    /// The Job.
    pub fn build(&self) -> Job {
        let labels = BTreeMap::from([
            (BACKUP_LABEL.to_string(), self.backup_name.to_string()),
            (MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
            (
                "app.kubernetes.io/component".to_string(),
                VERIFY_COMPONENT.to_string(),
            ),
        ]);
        let mut args = vec![
            "verify-backup".to_string(),
            format!("--sha256={}", self.sha256),
            format!("--revision={}", self.revision),
            format!("--scratch-dir={SCRATCH_MOUNT}/verify"),
            format!("--termination-log={TERMINATION_LOG}"),
        ];
        if let Some(recorded) = self.hash_kv {
            args.push(format!("--hash-kv={}", recorded.hash));
            args.push(format!(
                "--hash-kv-compact-revision={}",
                recorded.compact_revision
            ));
        }
        let mut env = Vec::new();
        let mut volumes = vec![Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }];
        let mut mounts = vec![VolumeMount {
            name: "scratch".into(),
            mount_path: SCRATCH_MOUNT.into(),
            ..Default::default()
        }];
        let file = file_name(self.backup_name);
        wire_destination(
            self.destination,
            &file,
            true,
            &mut args,
            &mut env,
            &mut volumes,
            &mut mounts,
        );
        let container = Container {
            name: "verify".into(),
            image: Some(self.image.clone()),
            command: Some(vec!["ferrocd-operator".into()]),
            args: Some(args),
            env: (!env.is_empty()).then_some(env),
            volume_mounts: Some(mounts),
            ..Default::default()
        };
        tool_job(
            ObjectMeta {
                name: Some(job_name(self.backup_name)),
                namespace: Some(self.namespace.to_string()),
                labels: Some(labels),
                owner_references: Some(vec![self.owner.clone()]),
                ..Default::default()
            },
            container,
            volumes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::job::BACKUP_MOUNT;

    fn job(destination: &str) -> Job {
        let destination: BackupDestination = serde_yaml::from_str(destination).unwrap();
        VerifyJob {
            backup_name: "demo-20260101-000000",
            namespace: "prod",
            owner: OwnerReference {
                api_version: "ferrocd.io/v1alpha1".into(),
                kind: "EtcdBackup".into(),
                name: "demo-20260101-000000".into(),
                uid: "uid".into(),
                controller: Some(true),
                ..Default::default()
            },
            image: "ferrocd:test".into(),
            destination: &destination,
            sha256: &"ab".repeat(32),
            revision: 42,
            hash_kv: Some(HashKvRecord {
                hash: 3_044_323_718,
                compact_revision: 40,
            }),
        }
        .build()
    }

    fn container(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    #[test]
    fn s3_backup_is_verified_against_its_recorded_sha256_and_revision() {
        let job = job(
            "{s3: {endpoint: 'http://s3:9000', bucket: b, prefix: etcd, credentialsSecret: creds}}",
        );
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("demo-20260101-000000-verify")
        );
        let c = container(&job);
        let args = c.args.clone().unwrap();
        for flag in [
            "verify-backup".to_string(),
            format!("--sha256={}", "ab".repeat(32)),
            "--revision=42".to_string(),
            "--hash-kv=3044323718".to_string(),
            "--hash-kv-compact-revision=40".to_string(),
            "--s3-key=etcd/demo-20260101-000000.db".to_string(),
            "--s3-bucket=b".to_string(),
            "--scratch-dir=/scratch/verify".to_string(),
        ] {
            assert!(args.contains(&flag), "{flag} in {args:?}");
        }
        let env = c.env.clone().unwrap();
        let secret = env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(secret.name, "creds");
    }

    #[test]
    fn pvc_backup_is_mounted_read_only_beside_a_scratch_dir() {
        let job = job("{pvc: {claimName: backups, path: demo}}");
        let c = container(&job);
        assert!(c
            .args
            .as_ref()
            .unwrap()
            .contains(&"--file=/backup/demo/demo-20260101-000000.db".to_string()));
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.mount_path == BACKUP_MOUNT && m.read_only == Some(true)));
        assert!(mounts.iter().any(|m| m.mount_path == SCRATCH_MOUNT));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volumes = pod.volumes.as_ref().unwrap();
        assert!(volumes.iter().any(|v| v.empty_dir.is_some()));
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
    }

    #[test]
    fn verify_pods_are_selected_apart_from_the_backups() {
        let job = job("{pvc: {claimName: backups}}");
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], VERIFY_COMPONENT);
        assert_eq!(labels[BACKUP_LABEL], "demo-20260101-000000");
        assert_eq!(
            pod_selector("x"),
            "ferrocd.io/backup=x,app.kubernetes.io/component=backup-verify"
        );
    }
}
