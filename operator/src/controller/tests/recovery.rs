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
