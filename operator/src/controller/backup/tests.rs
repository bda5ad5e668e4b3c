use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
};

use super::*;
use crate::backup::HashKvRecord;
use crate::crd::EtcdBackupSpec;

fn backup() -> EtcdBackup {
    let spec: EtcdBackupSpec = serde_yaml::from_str(
        "{clusterName: demo, destination: {pvc: {claimName: backups, path: demo}}}",
    )
    .unwrap();
    let mut backup = EtcdBackup::new("nightly", spec);
    backup.metadata.namespace = Some("prod".into());
    backup
}

fn job(succeeded: i32, failed_condition: bool) -> Job {
    let conditions = failed_condition.then(|| {
        vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("BackoffLimitExceeded".into()),
            message: Some("Job has reached the specified backoff limit".into()),
            ..Default::default()
        }]
    });
    Job {
        status: Some(JobStatus {
            succeeded: Some(succeeded),
            conditions,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(phase: &str, message: &str, created: i64) -> Pod {
    let mut pod = Pod {
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "backup".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        message: Some(message.into()),
                        exit_code: i32::from(phase != "Succeeded"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    pod.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    pod
}

fn report() -> BackupReport {
    BackupReport {
        size: 24608,
        revision: 42,
        sha256: "0f".repeat(32),
        location: "/backup/demo/nightly.db".into(),
        duration_seconds: 1.5,
        pruned: Vec::new(),
        hash_kv: Some(HashKvRecord {
            hash: 3_044_323_718,
            compact_revision: 40,
        }),
    }
}

#[test]
fn running_job_is_running() {
    assert_eq!(judge(&job(0, false), &[]), Verdict::Running);
}

#[test]
fn succeeded_job_reports_the_pods_termination_message() {
    let message = serde_json::to_string(&Outcome::Succeeded(report())).unwrap();
    let pods = [pod("Succeeded", &message, 10)];
    assert_eq!(judge(&job(1, false), &pods), Verdict::Succeeded(report()));
}

#[test]
fn failed_job_reports_the_last_attempts_error() {
    let first = serde_json::to_string(&Outcome::Failed {
        reason: "StoreUnreachable".into(),
        message: "first".into(),
    })
    .unwrap();
    let last = serde_json::to_string(&Outcome::Failed {
        reason: "ObjectStorageFailed".into(),
        message: "S3 PutObject answered HTTP 403".into(),
    })
    .unwrap();
    let pods = [pod("Failed", &last, 30), pod("Failed", &first, 10)];
    assert_eq!(
        judge(&job(0, true), &pods),
        Verdict::Failed {
            reason: "ObjectStorageFailed".into(),
            message: "S3 PutObject answered HTTP 403".into(),
        }
    );
}

#[test]
fn failed_job_without_report_keeps_the_logs_or_the_jobs_reason() {
    let pods = [pod("Failed", "exec format error", 10)];
    assert_eq!(
        judge(&job(0, true), &pods),
        Verdict::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "exec format error".into(),
        }
    );
}

#[test]
fn success_status_carries_the_report_and_the_pvc_location() {
    let now = Time(Timestamp::from_second(100).unwrap());
    let status = next_status(
        EtcdBackupStatus::default(),
        "nightly",
        &backup(),
        &Verdict::Succeeded(report()),
        now.clone(),
    );
    assert_eq!(status.phase, Some(BackupPhase::Succeeded));
    assert_eq!(status.size, Some(24608));
    assert_eq!(status.revision, Some(42));
    assert_eq!(status.sha256, Some("0f".repeat(32)));
    assert_eq!(status.hash_kv, Some(3_044_323_718));
    assert_eq!(status.hash_kv_compact_revision, Some(40));
    assert_eq!(
        status.location.as_deref(),
        Some("pvc://backups/demo/nightly.db")
    );
    assert_eq!(status.duration.as_deref(), Some("1.500s"));
    assert_eq!(status.completion_time, Some(now));
    assert_eq!(status.conditions[0].type_, "Complete");
}

#[test]
fn failure_status_says_why() {
    let status = next_status(
        EtcdBackupStatus::default(),
        "nightly",
        &backup(),
        &Verdict::Failed {
            reason: "StoreUnreachable".into(),
            message: "connecting to http://demo.prod.svc:2379: refused".into(),
        },
        Time(Timestamp::from_second(100).unwrap()),
    );
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    assert!(status.message.unwrap().contains("refused"));
    assert_eq!(status.conditions[0].reason, "StoreUnreachable");
}

#[test]
fn a_pod_that_can_not_start_says_why() {
    let mut waiting = pod("Pending", "", 10);
    waiting.metadata.name = Some("nightly-snapshot-abcde".into());
    waiting
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .state = Some(ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some("CreateContainerConfigError".into()),
            message: Some("secret \"s3-credentials\" not found".into()),
        }),
        ..Default::default()
    });
    let message = stuck(&[waiting]).unwrap();
    assert!(message.contains("CreateContainerConfigError"), "{message}");
    assert!(message.contains("s3-credentials"), "{message}");
}
