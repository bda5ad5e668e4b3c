//! The reconciler during an image upgrade against the mocked API server:
//! the StatefulSet's update revision differs from the pods' revision, and
//! the operator restarts one member pod, moves leadership before the
//! leader's restart, or stops the rollout on a failing pod.

use super::*;
use crate::controller::upgrade::{REQUEUE_ROLLING, REVISION_LABEL};
use crate::status;

const OLD: &str = "demo-5d8f9c7b6";
const NEW: &str = "demo-7c9d6f5b4";

/// The StatefulSet as the API server returns it once its controller saw
/// the new template.
fn rolled_stateful_set(cluster: &EtcdCluster, c: &ClusterRef) -> Value {
    let mut sts = serde_json::to_value(builders::stateful_set(c, &cluster.spec, 3)).unwrap();
    sts["metadata"]["generation"] = json!(4);
    sts["status"] = json!({"replicas": 3, "observedGeneration": 4, "updateRevision": NEW});
    sts
}

fn pod_on(name: String, revision: &str) -> Value {
    let mut pod = ready_pod(name);
    pod["metadata"]["labels"] = json!({ REVISION_LABEL: revision });
    pod["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
    pod
}

fn crash_looping_on(name: String, revision: &str) -> Value {
    let mut pod = pod_on(name, revision);
    pod["status"] = json!({
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{
            "name": "ferrocd", "image": "localhost/ferrocd:broken", "imageID": "",
            "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        }],
    });
    pod
}

fn pvcs(c: &ClusterRef) -> Vec<Value> {
    (0..3).map(|i| pvc(c.pvc_name(i))).collect()
}

fn event(reason: &'static str, note_has: &'static str) -> Expect {
    expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        move |seen| {
            assert_eq!(seen.body["reason"], reason);
            let note = seen.body["note"].as_str().unwrap();
            assert!(note.contains(note_has), "{note}");
        },
    )
}

#[tokio::test]
async fn new_revision_restarts_the_highest_follower_first() {
    let (cluster, c, fake) = three_members();
    let mut expectations = observe(
        Some(rolled_stateful_set(&cluster, &c)),
        (0..3).map(|i| pod_on(c.member_name(i), OLD)).collect(),
        pvcs(&c),
    );
    expectations.extend(applies("existing", 3, 3));
    expectations.push(expect(
        Method::DELETE,
        core("pods", "demo-2"),
        Reply::Echo,
        |_| {},
    ));
    expectations.push(event("MemberRestarted", "demo-2"));
    expectations.push(status_apply(&cluster, |status| {
        let upgrading = condition(status, "Upgrading");
        assert_eq!(upgrading["status"], "True");
        assert_eq!(upgrading["reason"], "RestartingMember");
        assert_eq!(status["updateRevision"], NEW);
        assert_eq!(status["updatedReplicas"], 0);
    }));
    let action = run(cluster, fake, expectations).await.unwrap();
    assert_eq!(action, Action::requeue(REQUEUE_ROLLING));
}

#[tokio::test]
async fn outdated_leader_hands_leadership_to_an_updated_member_first() {
    let (cluster, c, fake) = three_members();
    let leader = fake.leader().unwrap();
    let pods = vec![
        pod_on(c.member_name(0), OLD),
        pod_on(c.member_name(1), NEW),
        pod_on(c.member_name(2), NEW),
    ];
    let mut expectations = observe(Some(rolled_stateful_set(&cluster, &c)), pods, pvcs(&c));
    expectations.extend(applies("existing", 3, 3));
    expectations.push(event("LeaderMoved", "from demo-0 to demo-1"));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(condition(status, "Upgrading")["reason"], "MovingLeader");
        assert_eq!(status["updatedReplicas"], 2);
    }));
    run(cluster, fake.clone(), expectations).await.unwrap();
    let members = fake.member_list().await.unwrap().members;
    assert_ne!(fake.leader(), Some(leader));
    assert_eq!(fake.leader(), Some(members[1].id));
}

#[tokio::test]
async fn crash_looping_new_pod_stops_the_rollout_with_a_condition() {
    let (cluster, c, fake) = three_members();
    fake.stop(&c.peer_url(2));
    let pods = vec![
        pod_on(c.member_name(0), OLD),
        pod_on(c.member_name(1), OLD),
        crash_looping_on(c.member_name(2), NEW),
    ];
    let mut expectations = observe(Some(rolled_stateful_set(&cluster, &c)), pods, pvcs(&c));
    expectations.extend(applies("existing", 3, 3));
    // No pod is deleted: only the warning and the status.
    expectations.push(event("UpgradeFailed", "demo-2"));
    expectations.push(status_apply(&cluster, |status| {
        let upgrading = condition(status, "Upgrading");
        assert_eq!(upgrading["status"], "False");
        assert_eq!(upgrading["reason"], "UpgradeFailed");
        let message = upgrading["message"].as_str().unwrap();
        assert!(message.contains("crash-looping"), "{message}");
        assert_eq!(condition(status, "Available")["status"], "True");
    }));
    let action = run(cluster, fake, expectations).await.unwrap();
    assert_eq!(action, Action::requeue(REQUEUE_WAITING));
}

#[tokio::test]
async fn failed_rollout_warns_once() {
    let (mut cluster, c, fake) = three_members();
    fake.stop(&c.peer_url(2));
    cluster.status = Some(crate::crd::EtcdClusterStatus {
        conditions: vec![status::upgrading(
            false,
            "UpgradeFailed",
            "demo-2 is crash-looping".into(),
            Some(2),
            &[],
            &Time(Timestamp::now()),
        )],
        ..Default::default()
    });
    let pods = vec![
        pod_on(c.member_name(0), OLD),
        pod_on(c.member_name(1), OLD),
        crash_looping_on(c.member_name(2), NEW),
    ];
    let mut expectations = observe(Some(rolled_stateful_set(&cluster, &c)), pods, pvcs(&c));
    expectations.extend(applies("existing", 3, 3));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(condition(status, "Upgrading")["reason"], "UpgradeFailed");
    }));
    run(cluster, fake, expectations).await.unwrap();
}

#[tokio::test]
async fn statefulset_not_yet_observed_restarts_nothing_and_keeps_the_condition() {
    let (mut cluster, c, fake) = three_members();
    cluster.status = Some(crate::crd::EtcdClusterStatus {
        conditions: vec![status::upgrading(
            false,
            "UpToDate",
            "all 3 members run revision x".into(),
            Some(2),
            &[],
            &Time(Timestamp::now()),
        )],
        ..Default::default()
    });
    let mut sts = rolled_stateful_set(&cluster, &c);
    sts["metadata"]["generation"] = json!(5);
    let mut expectations = observe(
        Some(sts),
        (0..3).map(|i| pod_on(c.member_name(i), OLD)).collect(),
        pvcs(&c),
    );
    expectations.extend(applies("existing", 3, 3));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(condition(status, "Upgrading")["reason"], "UpToDate");
    }));
    let action = run(cluster, fake, expectations).await.unwrap();
    assert_eq!(action, Action::requeue(REQUEUE_ROLLING));
}
