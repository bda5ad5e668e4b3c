//! The reconciler after a quorum loss against the mocked API server: with
//! `spec.recovery` past its grace period it names the survivor in the
//! bootstrap ConfigMap, deletes the other members' volumes and pods and
//! restarts the survivor, and takes no membership step meanwhile.

use super::*;
use crate::controller::recovery::REQUEUE_RECOVERING;
use crate::crd::{RecoveryMode, RecoverySpec};

/// Three members last seen healthy, quorum reported lost a minute ago,
/// with `spec.recovery: FromSurvivor`; members 1 and 2 are gone.
fn lost_quorum() -> (EtcdCluster, ClusterRef, Arc<FakeEtcd>) {
    let mut cluster = cluster(3);
    cluster.spec.recovery = Some(RecoverySpec {
        mode: RecoveryMode::FromSurvivor,
        grace_period_seconds: Some(10),
    });
    let c = cluster_ref(&cluster);
    let minute_ago = Timestamp::now() - std::time::Duration::from_secs(60);
    cluster.status = Some(crate::crd::EtcdClusterStatus {
        members: (0..3)
            .map(|i| crate::crd::MemberStatus {
                name: c.member_name(i),
                id: format!("{i:x}"),
                peer_url: c.peer_url(i),
                healthy: true,
                ..Default::default()
            })
            .collect(),
        cluster_id: Some("cdf818194e3a8c32".into()),
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "QuorumLost".into(),
            status: "True".into(),
            reason: "GracePeriod".into(),
            message: String::new(),
            observed_generation: Some(2),
            last_transition_time: Time(minute_ago),
        }],
        ..Default::default()
    });
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    for i in [1, 2] {
        fake.stop(&c.peer_url(i));
    }
    (cluster, c, fake)
}

fn delete(path: String) -> Expect {
    expect(Method::DELETE, path, Reply::NotFound, |_| {})
}

#[tokio::test]
async fn past_the_grace_period_the_survivor_is_forced_and_the_others_wiped() {
    let (cluster, c, fake) = lost_quorum();
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(Some(sts), vec![], vec![]);
    expectations.push(expect(
        Method::GET,
        core("configmaps", "demo-bootstrap"),
        Reply::NotFound,
        |_| {},
    ));
    expectations.push(expect(
        Method::PATCH,
        core("configmaps", "demo-bootstrap"),
        Reply::Echo,
        |seen| {
            assert!(
                seen.query
                    .contains("fieldManager=ferrocd-operator-recovery"),
                "{}",
                seen.query
            );
            assert_eq!(seen.body["data"]["force-new-cluster-member"], "demo-0");
            assert_eq!(
                seen.body["data"].as_object().unwrap().len(),
                1,
                "only its own key"
            );
        },
    ));
    for i in [1, 2] {
        expectations.push(delete(core("persistentvolumeclaims", &c.pvc_name(i))));
        expectations.push(delete(core("pods", &c.member_name(i))));
    }
    expectations.push(delete(core("pods", &c.member_name(0))));
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            assert_eq!(seen.body["reason"], "QuorumRecoveryStarted");
            assert_eq!(seen.body["type"], "Warning");
            assert!(seen.body["note"].as_str().unwrap().contains("demo-0"));
        },
    ));
    expectations.extend(applies("unused", 0, 3).into_iter().skip(1).take(3));
    expectations.push(status_apply(&cluster, |status| {
        let lost = condition(status, "QuorumLost");
        assert_eq!(lost["status"], "True");
        assert_eq!(lost["reason"], "Recovering");
        let recovering = condition(status, "Recovering");
        assert_eq!(recovering["status"], "True");
        assert_eq!(recovering["reason"], "ForcingSurvivor");
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_RECOVERING));
}

#[tokio::test]
async fn within_the_grace_period_nothing_is_deleted() {
    let (mut cluster, c, fake) = lost_quorum();
    if let Some(status) = cluster.status.as_mut() {
        status.conditions.clear();
    }
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(Some(sts), vec![], vec![]);
    expectations.push(expect(
        Method::GET,
        core("configmaps", "demo-bootstrap"),
        Reply::NotFound,
        |_| {},
    ));
    expectations.extend(applies("unused", 0, 3).into_iter().skip(1).take(3));
    expectations.push(status_apply(&cluster, |status| {
        let lost = condition(status, "QuorumLost");
        assert_eq!(lost["status"], "True");
        assert_eq!(lost["reason"], "GracePeriod");
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_RECOVERING));
}

/// `lost_quorum` with `spec.recovery: FromLatestBackup`.
fn lost_quorum_with_backups() -> (EtcdCluster, ClusterRef, Arc<FakeEtcd>) {
    let (mut cluster, c, fake) = lost_quorum();
    cluster.spec.recovery = Some(RecoverySpec {
        mode: RecoveryMode::FromLatestBackup,
        grace_period_seconds: Some(10),
    });
    (cluster, c, fake)
}

fn pod(name: String) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}})
}

fn etcd_backup(name: &str, phase: &str, completed: &str, revision: i64) -> Value {
    json!({
        "apiVersion": "ferrocd.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"clusterName": NAME, "destination": {"pvc": {"claimName": "backups", "path": "demo"}}},
        "status": {"phase": phase, "completionTime": completed, "revision": revision, "sha256": "a".repeat(64)},
    })
}

fn list_backups(items: Vec<Value>) -> Expect {
    expect(
        Method::GET,
        format!("/apis/ferrocd.io/v1alpha1/namespaces/{NS}/etcdbackups"),
        Reply::Json(json!({
            "apiVersion": "ferrocd.io/v1alpha1", "kind": "EtcdBackupList",
            "metadata": {"resourceVersion": "1"}, "items": items,
        })),
        |_| {},
    )
}

fn rebuild_status_patch(
    cluster: &EtcdCluster,
    check: impl FnOnce(&Value) + Send + 'static,
) -> Expect {
    expect(
        Method::PATCH,
        format!("{}/status", cluster_path()),
        Reply::Json(serde_json::to_value(cluster).unwrap()),
        move |seen| {
            assert!(
                seen.query.contains("fieldManager=ferrocd-operator-rebuild"),
                "{}",
                seen.query
            );
            let status = seen.body["status"].as_object().unwrap();
            assert_eq!(status.len(), 1, "only status.recovery: {status:?}");
            check(&seen.body["status"]["recovery"]);
        },
    )
}

fn event(reason: &'static str, check: impl FnOnce(&str) + Send + 'static) -> Expect {
    expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        move |seen| {
            assert_eq!(seen.body["reason"], reason);
            check(seen.body["note"].as_str().unwrap());
        },
    )
}

#[tokio::test]
async fn past_the_grace_period_the_newest_backup_is_recorded_and_every_member_deleted() {
    let (cluster, c, fake) = lost_quorum_with_backups();
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(
        Some(sts),
        (0..3).map(|i| pod(c.member_name(i))).collect(),
        (0..3).map(|i| pvc(c.pvc_name(i))).collect(),
    );
    expectations.push(expect(
        Method::GET,
        core("configmaps", "demo-bootstrap"),
        Reply::NotFound,
        |_| {},
    ));
    expectations.push(list_backups(vec![
        etcd_backup("old", "Succeeded", "2026-01-01T00:00:00Z", 10),
        etcd_backup("newest-failed", "Failed", "2026-03-01T00:00:00Z", 0),
        etcd_backup("recent", "Succeeded", "2026-02-01T00:00:00Z", 20),
    ]));
    expectations.push(rebuild_status_patch(&cluster, |recovery| {
        let rebuild = &recovery["rebuild"];
        assert_eq!(rebuild["backupName"], "recent");
        assert_eq!(rebuild["revision"], 20);
        assert_eq!(rebuild["phase"], "Deleting");
        assert_eq!(rebuild["source"]["pvc"]["path"], "demo/recent.db");
        assert_eq!(rebuild["source"]["sha256"], "a".repeat(64));
    }));
    expectations.push(event("QuorumRecoveryStarted", |note| {
        assert!(note.contains("recent") && note.contains("after that backup are lost"));
    }));
    // The StatefulSet first, so it brings no pod back onto a going volume.
    expectations.push(expect(
        Method::DELETE,
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"),
        Reply::NotFound,
        |seen| assert_eq!(seen.body["propagationPolicy"], "Orphan", "{}", seen.body),
    ));
    for i in 0..3 {
        expectations.push(expect(
            Method::DELETE,
            core("pods", &c.member_name(i)),
            Reply::NotFound,
            |seen| assert_eq!(seen.body["gracePeriodSeconds"], 5, "{}", seen.body),
        ));
    }
    for i in 0..3 {
        expectations.push(delete(core("persistentvolumeclaims", &c.pvc_name(i))));
    }
    // No object is applied while the old cluster goes.
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(condition(status, "QuorumLost")["status"], "True");
        let recovering = condition(status, "Recovering");
        assert_eq!(recovering["status"], "True");
        assert_eq!(recovering["reason"], "RestoringFromBackup");
        assert!(recovering["message"].as_str().unwrap().contains("recent"));
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_RECOVERING));
}

#[tokio::test]
async fn with_no_usable_backup_nothing_is_deleted_and_a_warning_is_recorded() {
    let (mut cluster, c, fake) = lost_quorum_with_backups();
    cluster.spec.backup = Some(
        serde_json::from_value(json!({
            "schedule": "0 * * * *", "verify": true,
            "destination": {"pvc": {"claimName": "backups"}},
        }))
        .unwrap(),
    );
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(Some(sts), vec![], vec![]);
    expectations.push(expect(
        Method::GET,
        core("configmaps", "demo-bootstrap"),
        Reply::NotFound,
        |_| {},
    ));
    // Succeeded but never verified, while spec.backup.verify is set.
    expectations.push(list_backups(vec![etcd_backup(
        "unverified",
        "Succeeded",
        "2026-02-01T00:00:00Z",
        20,
    )]));
    expectations.push(event("NoUsableBackup", |note| {
        assert!(note.contains("spec.backup.verify"), "{note}");
    }));
    expectations.extend(applies("unused", 0, 3).into_iter().skip(1).take(3));
    expectations.push(status_apply(&cluster, |status| {
        let recovering = condition(status, "Recovering");
        assert_eq!(recovering["status"], "False");
        assert_eq!(recovering["reason"], "NoUsableBackup");
        assert_eq!(condition(status, "QuorumLost")["reason"], "NoUsableBackup");
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_ne!(
        action,
        Action::requeue(REQUEUE_RECOVERING),
        "looks again later"
    );
}

/// A rebuild of `demo` from backup `recent`, recorded in `phase`.
fn rebuilding(cluster: &mut EtcdCluster, phase: &str) {
    let recovery = json!({
        "rebuild": {
            "backupName": "recent", "revision": 20, "phase": phase,
            "startedAt": "2026-02-02T00:00:00Z",
            "source": {"pvc": {"claimName": "backups", "path": "demo/recent.db"}, "sha256": "a".repeat(64)},
        },
    });
    if let Some(status) = cluster.status.as_mut() {
        status.recovery = Some(serde_json::from_value(recovery).unwrap());
    }
}

#[tokio::test]
async fn once_nothing_is_left_the_members_bootstrap_from_the_backup() {
    let (mut cluster, _, fake) = lost_quorum_with_backups();
    rebuilding(&mut cluster, "Deleting");
    let mut expectations = observe(None, vec![], vec![]);
    expectations.push(rebuild_status_patch(&cluster, |recovery| {
        assert_eq!(recovery["rebuild"]["phase"], "Restoring");
        assert_eq!(recovery["rebuild"]["backupName"], "recent");
    }));
    let mut bootstrap = applies("new", 3, 3);
    // The members restore the recorded file in their init container.
    bootstrap[3] = apply(
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"),
        |body| {
            let init = &body["spec"]["template"]["spec"]["initContainers"];
            let restore = init
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "restore")
                .expect("a restore init container");
            let args = restore["args"].to_string();
            assert!(args.contains(&"a".repeat(64)), "{args}");
            assert_eq!(body["spec"]["replicas"], 3);
        },
    );
    expectations.extend(bootstrap);
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(
            condition(status, "Recovering")["reason"],
            "RestoringFromBackup"
        );
        assert!(status.get("members").is_none(), "old members dropped");
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_RECOVERING));
}

#[tokio::test]
async fn a_rebuilt_cluster_with_a_leader_clears_the_record_and_keeps_its_new_volumes() {
    let (mut cluster, c, _) = lost_quorum_with_backups();
    rebuilding(&mut cluster, "Restoring");
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    // The restored members have the IDs the old ones had (same flags);
    // the old ones' volumes were recorded, the new ones differ.
    let ids = fake.member_list().await.unwrap().members;
    if let Some(status) = cluster.status.as_mut() {
        for (m, id) in status.members.iter_mut().zip(&ids) {
            m.id = format!("{:x}", id.id);
            m.pvc_uid = Some("uid-old".into());
        }
    }
    let restored = recovery_source_spec(&cluster);
    let sts = serde_json::to_value(builders::stateful_set(&c, &restored, 3)).unwrap();
    let mut expectations = observe(
        Some(sts),
        (0..3).map(|i| ready_pod(c.member_name(i))).collect(),
        (0..3).map(|i| pvc(c.pvc_name(i))).collect(),
    );
    expectations.push(rebuild_status_patch(&cluster, |recovery| {
        assert!(recovery.get("rebuild").is_none(), "{recovery}");
        let last = &recovery["lastRebuild"];
        assert_eq!(last["backupName"], "recent");
        assert_eq!(last["phase"], "Restored");
        assert!(last["completedAt"].is_string());
    }));
    expectations.push(event("QuorumRecovered", |note| {
        assert!(
            note.contains("recent") && note.contains("revision 20"),
            "{note}"
        );
    }));
    expectations.extend(applies("existing", 3, 3));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(condition(status, "QuorumLost")["status"], "False");
        let recovering = condition(status, "Recovering");
        assert_eq!(recovering["status"], "False");
        assert_eq!(recovering["reason"], "Recovered");
        assert_eq!(
            condition(status, "Progressing")["reason"],
            "ReconcileComplete"
        );
        // The new volumes are recorded, not taken for replaced ones.
        assert_eq!(status["members"][0]["pvcUID"], "uid-data-demo-0");
    }));
    run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
}

/// The spec the members' pods are built from during a rebuild.
fn recovery_source_spec(cluster: &EtcdCluster) -> EtcdClusterSpec {
    let mut spec = cluster.spec.clone();
    spec.restore = cluster
        .status
        .as_ref()
        .and_then(|s| s.recovery.as_ref())
        .and_then(|r| r.rebuild.as_ref())
        .map(|r| r.source.clone());
    spec
}

#[tokio::test]
async fn a_member_whose_restore_fails_is_reported_while_the_rebuild_waits() {
    let (mut cluster, c, fake) = lost_quorum_with_backups();
    rebuilding(&mut cluster, "Restoring");
    fake.stop(&c.peer_url(0));
    let restored = recovery_source_spec(&cluster);
    let sts = serde_json::to_value(builders::stateful_set(&c, &restored, 3)).unwrap();
    let mut failed = pod(c.member_name(1));
    failed["status"] = json!({"initContainerStatuses": [{
        "name": "restore", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
        "lastState": {"terminated": {"exitCode": 1, "message": "snapshot sha256 is b, expected a"}},
    }]});
    let mut expectations = observe(
        Some(sts),
        vec![pod(c.member_name(0)), failed, pod(c.member_name(2))],
        (0..3).map(|i| pvc(c.pvc_name(i))).collect(),
    );
    expectations.push(event("RestoreFailed", |note| {
        assert!(note.contains("demo-1: snapshot sha256 is b"), "{note}");
    }));
    expectations.extend(applies("unused", 0, 3).into_iter().skip(1).take(3));
    expectations.push(status_apply(&cluster, |status| {
        let recovering = condition(status, "Recovering");
        assert_eq!(recovering["status"], "True");
        assert_eq!(recovering["reason"], "RestoreFailed");
        assert!(recovering["message"].as_str().unwrap().contains("recent"));
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_RECOVERING));
}
