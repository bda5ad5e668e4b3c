//! The `EtcdBackup` reconciler with `spec.verify` against the mocked API
//! server: a succeeded backup gets its verify Job and a `Verified: Unknown`
//! condition; the Job's outcome becomes `Verified` True or False with an
//! Event (and the failure metric); a verified backup is left alone.

use k8s_openapi::api::batch::v1::Job;

use super::*;
use crate::backup::verify::{VerifyOutcome, VerifyReport};
use crate::controller::backup::reconcile as reconcile_backup;
use crate::crd::{BackupPhase, EtcdBackup, EtcdBackupStatus};

const BACKUP: &str = "demo-20260101-000000";

fn backup_path(sub: &str) -> String {
    format!("/apis/ferrocd.io/v1alpha1/namespaces/{NS}/etcdbackups/{BACKUP}{sub}")
}

fn job_path(name: &str) -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs{name}")
}

/// A succeeded, scheduled backup to S3 with `verify: true`.
fn succeeded_backup(conditions: Vec<(&str, &str)>) -> EtcdBackup {
    let spec = serde_yaml::from_str(
        "{clusterName: demo, verify: true, destination: {s3: {endpoint: 'http://s3:9000', \
         bucket: b, credentialsSecret: creds}}}",
    )
    .unwrap();
    let mut backup = EtcdBackup::new(BACKUP, spec);
    backup.metadata.namespace = Some(NS.into());
    backup.metadata.uid = Some("backup-uid".into());
    backup.status = Some(EtcdBackupStatus {
        phase: Some(BackupPhase::Succeeded),
        revision: Some(42),
        sha256: Some("ab".repeat(32)),
        hash_kv: Some(3_044_323_718),
        hash_kv_compact_revision: Some(40),
        conditions: conditions
            .into_iter()
            .map(
                |(type_, status)| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: type_.into(),
                    status: status.into(),
                    reason: "R".into(),
                    message: String::new(),
                    observed_generation: None,
                    last_transition_time: Time(Timestamp::from_second(1).unwrap()),
                },
            )
            .collect(),
        ..Default::default()
    });
    backup
}

async fn run_backup(
    backup: EtcdBackup,
    expectations: Vec<Expect>,
) -> (Result<Action, Error>, Arc<Metrics>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, expectations));
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(
        Client::new(service, NS),
        metrics.clone(),
        FakeConnector(Arc::new(FakeEtcd::default())),
    ));
    let result = reconcile_backup(Arc::new(backup), ctx.clone()).await;
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the client is released after reconcile")
        .expect("all expected requests came, checked");
    (result, metrics)
}

fn event(reason: &'static str, type_: &'static str) -> Expect {
    expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        move |seen| {
            assert_eq!(seen.body["reason"], reason);
            assert_eq!(seen.body["type"], type_);
            assert_eq!(seen.body["regarding"]["name"], BACKUP);
        },
    )
}

/// The status apply, answered with a stored backup.
fn status_patch(check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    let stored = serde_json::to_value(succeeded_backup(vec![])).unwrap();
    expect(
        Method::PATCH,
        backup_path("/status"),
        Reply::Json(stored),
        move |seen| {
            assert_eq!(seen.content_type, "application/apply-patch+yaml");
            assert!(seen.query.contains("fieldManager=ferrocd-operator"));
            assert_eq!(seen.body["kind"], "EtcdBackup");
            check(&seen.body["status"]);
        },
    )
}

fn verified(status: &Value) -> &Value {
    condition(status, "Verified")
}

/// A finished verify Job whose pod left `outcome` as termination message.
fn finished(succeeded: bool, outcome: &VerifyOutcome) -> (Value, Value) {
    let job = if succeeded {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": format!("{BACKUP}-verify")},
               "status": {"succeeded": 1}})
    } else {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": format!("{BACKUP}-verify")},
               "status": {"failed": 3, "conditions": [{"type": "Failed", "status": "True",
                          "reason": "BackoffLimitExceeded"}]}})
    };
    let pod = json!({
        "metadata": {"name": format!("{BACKUP}-verify-x"), "creationTimestamp": "2026-01-01T00:00:10Z"},
        "status": {"phase": if succeeded { "Succeeded" } else { "Failed" },
                   "containerStatuses": [{"name": "verify", "image": "i", "imageID": "", "ready": false,
                       "restartCount": 0,
                       "state": {"terminated": {"exitCode": i32::from(!succeeded),
                           "message": serde_json::to_string(outcome).unwrap()}}}]},
    });
    (job, list("PodList", vec![pod]))
}

fn observe_job(job: Option<Value>, pods: Option<Value>) -> Vec<Expect> {
    let mut expectations = vec![expect(
        Method::GET,
        job_path(&format!("/{BACKUP}-verify")),
        job.map_or(Reply::NotFound, Reply::Json),
        |_| {},
    )];
    if let Some(pods) = pods {
        expectations.push(expect(
            Method::GET,
            format!("/api/v1/namespaces/{NS}/pods"),
            Reply::Json(pods),
            |seen| {
                assert!(
                    seen.query.contains("component%3Dbackup-verify"),
                    "{}",
                    seen.query
                );
            },
        ));
    }
    expectations
}

#[tokio::test]
async fn succeeded_backup_with_verify_gets_its_verify_job_and_an_unknown_condition() {
    let mut expectations = observe_job(None, None);
    expectations.push(expect(
        Method::GET,
        format!("/apis/ferrocd.io/v1alpha1/namespaces/{NS}/etcdclusters/demo"),
        Reply::Json(serde_json::to_value(cluster(3)).unwrap()),
        |_| {},
    ));
    expectations.push(expect(Method::POST, job_path(""), Reply::Echo, |seen| {
        let job: Job = serde_json::from_value(seen.body.clone()).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("demo-20260101-000000-verify")
        );
        assert_eq!(job.metadata.owner_references.unwrap()[0].uid, "backup-uid");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(args[0], "verify-backup");
        assert!(
            args.contains(&format!("--sha256={}", "ab".repeat(32))),
            "{args:?}"
        );
        assert!(args.contains(&"--revision=42".to_string()), "{args:?}");
        assert!(
            args.contains(&"--hash-kv=3044323718".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--hash-kv-compact-revision=40".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--s3-key=demo-20260101-000000.db".to_string()),
            "{args:?}"
        );
    }));
    expectations.push(event("VerifyStarted", "Normal"));
    expectations.push(status_patch(|status| {
        assert_eq!(status["phase"], "Succeeded");
        assert_eq!(verified(status)["status"], "Unknown");
        assert_eq!(status["sha256"], "ab".repeat(32));
    }));
    let (result, _) = run_backup(succeeded_backup(vec![("Complete", "True")]), expectations).await;
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(crate::controller::backup::REQUEUE_RUNNING)
    );
}

#[tokio::test]
async fn verified_job_sets_verified_true_with_an_event() {
    let report = VerifyReport {
        sha256: "ab".repeat(32),
        revision: 42,
        total_keys: 31,
        hash: 7,
        hash_kv: Some(3_044_323_718),
        hash_kv_compared: true,
    };
    let (job, pods) = finished(true, &VerifyOutcome::Verified(report));
    let mut expectations = observe_job(Some(job), Some(pods));
    expectations.push(event("BackupVerified", "Normal"));
    expectations.push(status_patch(|status| {
        let c = verified(status);
        assert_eq!(c["status"], "True");
        assert!(
            c["message"].as_str().unwrap().contains("revision 42"),
            "{c}"
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("serves HashKV 3044323718, the cluster's"),
            "{c}"
        );
        let complete = condition(status, "Complete");
        assert_eq!(
            complete["status"], "True",
            "the backup's own condition stays"
        );
    }));
    let backup = succeeded_backup(vec![("Complete", "True"), ("Verified", "Unknown")]);
    let (result, metrics) = run_backup(backup, expectations).await;
    assert_eq!(result.expect("reconcile succeeds"), Action::await_change());
    assert!(!metrics
        .render()
        .contains("ferrocd_operator_backup_verify_failures_total{"));
}

#[tokio::test]
async fn failed_verification_sets_verified_false_records_a_warning_and_counts_it() {
    let outcome = VerifyOutcome::Failed {
        reason: "RevisionMismatch".into(),
        message:
            "snapshot holds changes up to revision 44, after the backup's recorded revision 42"
                .into(),
    };
    let (job, pods) = finished(false, &outcome);
    let mut expectations = observe_job(Some(job), Some(pods));
    expectations.push(event("RevisionMismatch", "Warning"));
    expectations.push(status_patch(|status| {
        let c = verified(status);
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "RevisionMismatch");
        assert!(
            c["message"].as_str().unwrap().contains("revision 44"),
            "{c}"
        );
        assert_eq!(status["phase"], "Succeeded");
    }));
    let backup = succeeded_backup(vec![("Complete", "True"), ("Verified", "Unknown")]);
    let (result, metrics) = run_backup(backup, expectations).await;
    assert_eq!(result.expect("reconcile succeeds"), Action::await_change());
    assert!(
        metrics.render().contains(
            "ferrocd_operator_backup_verify_failures_total{cluster=\"demo\",namespace=\"prod\"} 1"
        ),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn running_verify_job_only_requeues() {
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": format!("{BACKUP}-verify")}, "status": {"active": 1}});
    let expectations = observe_job(Some(job), Some(list("PodList", vec![])));
    let backup = succeeded_backup(vec![("Complete", "True"), ("Verified", "Unknown")]);
    let (result, _) = run_backup(backup, expectations).await;
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(crate::controller::backup::REQUEUE_RUNNING)
    );
}

#[tokio::test]
async fn verified_or_unverifiable_backups_are_left_alone() {
    for conditions in [
        vec![("Complete", "True"), ("Verified", "True")],
        vec![("Complete", "True"), ("Verified", "False")],
    ] {
        let (result, _) = run_backup(succeeded_backup(conditions), vec![]).await;
        assert_eq!(result.expect("reconcile succeeds"), Action::await_change());
    }
    let mut without_verify = succeeded_backup(vec![("Complete", "True")]);
    without_verify.spec.verify = false;
    let (result, _) = run_backup(without_verify, vec![]).await;
    assert_eq!(result.expect("reconcile succeeds"), Action::await_change());
    let mut failed = succeeded_backup(vec![]);
    failed.status.as_mut().unwrap().phase = Some(BackupPhase::Failed);
    let (result, _) = run_backup(failed, vec![]).await;
    assert_eq!(result.expect("reconcile succeeds"), Action::await_change());
}
