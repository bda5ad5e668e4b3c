//! The reconciler against a mocked API server: each scenario lists the
//! requests it expects, in order, with checks on their bodies and the
//! responses to send (the pattern of kube-rs/controller-rs `fixtures.rs`).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};

use super::*;
use crate::builders::{self, ClusterRef};
use crate::crd::{EtcdCluster, EtcdClusterSpec};
use crate::membership::fake::FakeEtcd;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "prod";
const NAME: &str = "demo";

/// Hands every reconcile the same fake store.
struct FakeConnector(Arc<FakeEtcd>);

impl EtcdConnector for FakeConnector {
    type Api = Arc<FakeEtcd>;

    fn connect(
        &self,
        endpoint: &str,
        _tls: Option<&CertSecret>,
    ) -> Result<Arc<FakeEtcd>, EtcdError> {
        assert_eq!(endpoint, "http://demo.prod.svc:2379");
        Ok(self.0.clone())
    }
}

/// One request as the mock API server saw it.
struct Seen {
    query: String,
    content_type: String,
    body: Value,
}

enum Reply {
    /// Send the request body back, as the API server does for an apply.
    Echo,
    /// Send this object.
    Json(Value),
    /// 404 with a `Status`.
    NotFound,
    /// 403 with a `Status` carrying this message.
    Forbidden(&'static str),
}

struct Expect {
    method: Method,
    path: String,
    check: Box<dyn FnOnce(&Seen) + Send>,
    reply: Reply,
}

fn expect(
    method: Method,
    path: impl Into<String>,
    reply: Reply,
    check: impl FnOnce(&Seen) + Send + 'static,
) -> Expect {
    Expect {
        method,
        path: path.into(),
        check: Box::new(check),
        reply,
    }
}

/// A server-side apply of `kind_path/name` by the operator, checked by `check`.
fn apply(path: String, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    expect(Method::PATCH, path, Reply::Echo, move |seen| {
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert!(
            seen.query.contains("fieldManager=ferrocd-operator")
                && seen.query.contains("force=true"),
            "apply without the operator's forced field manager: {}",
            seen.query
        );
        check(&seen.body);
    })
}

fn core(resource: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/{resource}/{name}")
}

fn cluster_path() -> String {
    format!("/apis/ferrocd.io/v1alpha1/namespaces/{NS}/etcdclusters/{NAME}")
}

/// Answers the expected requests in order, then checks that no other came.
async fn serve(mut handle: Handle, expectations: Vec<Expect>) {
    for expected in expectations {
        let (request, send) = handle.next_request().await.unwrap_or_else(|| {
            panic!(
                "reconcile ended before {} {}",
                expected.method, expected.path
            )
        });
        assert_eq!(
            (request.method(), request.uri().path()),
            (&expected.method, expected.path.as_str()),
            "unexpected request"
        );
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (expected.check)(&Seen {
            query,
            content_type,
            body,
        });
        let response = match expected.reply {
            Reply::Echo => Response::new(Body::from(bytes.to_vec())),
            Reply::Json(value) => Response::new(Body::from(serde_json::to_vec(&value).unwrap())),
            Reply::NotFound => {
                let status = json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found",
                });
                let mut response = Response::new(Body::from(serde_json::to_vec(&status).unwrap()));
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }
            Reply::Forbidden(message) => {
                let status = json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "Forbidden", "code": 403, "message": message,
                });
                let mut response = Response::new(Body::from(serde_json::to_vec(&status).unwrap()));
                *response.status_mut() = StatusCode::FORBIDDEN;
                response
            }
        };
        send.send_response(response);
    }
    if let Some((request, _)) = handle.next_request().await {
        panic!(
            "unexpected extra request {} {}",
            request.method(),
            request.uri()
        );
    }
}

/// Runs one reconcile of `cluster` against the expectations and the fake store.
async fn run(
    cluster: EtcdCluster,
    fake: Arc<FakeEtcd>,
    expectations: Vec<Expect>,
) -> Result<Action, Error> {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, expectations));
    let client = Client::new(service, NS);
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(Metrics::new()),
        FakeConnector(fake),
    ));
    let result = reconcile(Arc::new(cluster), ctx.clone()).await;
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the client is released after reconcile")
        .expect("all expected requests came, checked");
    result
}

fn cluster(replicas: i32) -> EtcdCluster {
    let mut cluster = EtcdCluster::new(
        NAME,
        EtcdClusterSpec {
            replicas,
            ..Default::default()
        },
    );
    cluster.metadata.namespace = Some(NS.into());
    cluster.metadata.uid = Some("9d1e6a3c-65a3-4f59-a3f5-0d7b8e2b1c44".into());
    cluster.metadata.generation = Some(2);
    cluster.metadata.finalizers = Some(vec![FINALIZER.into()]);
    cluster
}

/// A three-member cluster and its fake store, member 0 the leader.
fn three_members() -> (EtcdCluster, ClusterRef, Arc<FakeEtcd>) {
    let cluster = cluster(3);
    let c = cluster_ref(&cluster);
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    (cluster, c, fake)
}

fn cluster_ref(cluster: &EtcdCluster) -> ClusterRef {
    ClusterRef::new(cluster).unwrap()
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn ready_pod(name: String) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// A PVC with the UID `uid-<name>`.
fn pvc(name: String) -> Value {
    let uid = format!("uid-{name}");
    pvc_with_uid(name, &uid)
}

fn pvc_with_uid(name: String, uid: &str) -> Value {
    serde_json::to_value(PersistentVolumeClaim {
        metadata: kube::api::ObjectMeta {
            name: Some(name),
            namespace: Some(NS.into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

/// The observe requests: StatefulSet (`None`: absent), pods, PVCs.
fn observe(stateful_set: Option<Value>, pods: Vec<Value>, pvcs: Vec<Value>) -> Vec<Expect> {
    let selector_checked = |seen: &Seen| {
        assert!(
            seen.query
                .contains("labelSelector=app.kubernetes.io%2Finstance%3Ddemo"),
            "list without the cluster's selector: {}",
            seen.query
        );
    };
    vec![
        expect(
            Method::GET,
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"),
            stateful_set.map_or(Reply::NotFound, Reply::Json),
            |_| {},
        ),
        expect(
            Method::GET,
            format!("/api/v1/namespaces/{NS}/pods"),
            Reply::Json(list("PodList", pods)),
            selector_checked,
        ),
        expect(
            Method::GET,
            format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
            Reply::Json(list("PersistentVolumeClaimList", pvcs)),
            selector_checked,
        ),
    ]
}

/// The applies of ConfigMap, Services, StatefulSet and PDB, in that order.
fn applies(initial_cluster_state: &'static str, members: usize, replicas: i64) -> Vec<Expect> {
    vec![
        apply(core("configmaps", "demo-bootstrap"), move |body| {
            assert_eq!(body["kind"], "ConfigMap");
            assert_eq!(body["data"]["initial-cluster-state"], initial_cluster_state);
            let initial = body["data"]["initial-cluster"].as_str().unwrap();
            assert_eq!(initial.split(',').count(), members, "{initial}");
            assert_eq!(
                body["metadata"]["ownerReferences"][0]["kind"],
                "EtcdCluster"
            );
        }),
        apply(core("services", "demo-peer"), |body| {
            assert_eq!(body["spec"]["clusterIP"], "None");
        }),
        apply(core("services", NAME), |body| {
            assert_eq!(body["kind"], "Service");
            assert_eq!(body["spec"]["ports"][0]["port"], 2379);
        }),
        apply(
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"),
            move |body| {
                assert_eq!(body["kind"], "StatefulSet");
                assert_eq!(body["spec"]["replicas"], replicas);
            },
        ),
        apply(
            format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{NAME}"),
            |body| {
                assert_eq!(body["kind"], "PodDisruptionBudget");
                assert_eq!(body["spec"]["maxUnavailable"], 1);
            },
        ),
    ]
}

/// The status apply; `check` sees the `status` object.
fn status_apply(cluster: &EtcdCluster, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    let stored = serde_json::to_value(cluster).unwrap();
    expect(
        Method::PATCH,
        format!("{}/status", cluster_path()),
        Reply::Json(stored),
        move |seen| {
            assert_eq!(seen.content_type, "application/apply-patch+yaml");
            assert!(seen.query.contains("fieldManager=ferrocd-operator"));
            assert_eq!(seen.body["apiVersion"], "ferrocd.io/v1alpha1");
            assert_eq!(seen.body["kind"], "EtcdCluster");
            check(&seen.body["status"]);
        },
    )
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

#[tokio::test]
async fn new_cluster_applies_all_objects_in_order_then_status() {
    let cluster = cluster(3);
    let mut expectations = observe(None, vec![], vec![]);
    expectations.extend(applies("new", 3, 3));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["phase"], "Creating");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["clientEndpoint"], "http://demo.prod.svc:2379");
        assert_eq!(condition(status, "Progressing")["status"], "True");
        assert_eq!(condition(status, "Progressing")["reason"], "Bootstrapping");
    }));
    let fake = Arc::new(FakeEtcd::default());
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_PROGRESSING));
}

#[tokio::test]
async fn scale_up_adds_a_learner_records_an_event_and_reports_scaling() {
    let cluster = cluster(5);
    let c = cluster_ref(&cluster);
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(
        Some(sts),
        (0..3).map(|i| ready_pod(c.member_name(i))).collect(),
        (0..3).map(|i| pvc(c.pvc_name(i))).collect(),
    );
    // The StatefulSet grows only on the next reconcile, once the member exists.
    expectations.extend(applies("existing", 3, 3));
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            assert_eq!(seen.body["reason"], "MemberAdded");
            assert_eq!(seen.body["type"], "Normal");
            assert_eq!(seen.body["action"], "AddLearner");
            assert_eq!(seen.body["regarding"]["name"], NAME);
            assert!(seen.body["note"].as_str().unwrap().contains("demo-3"));
        },
    ));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["phase"], "Scaling");
        assert_eq!(status["replicas"], 3);
        assert_eq!(status["readyReplicas"], 3);
        assert_eq!(status["leader"], "demo-0");
        assert_eq!(status["members"].as_array().unwrap().len(), 3);
        assert_eq!(condition(status, "Available")["status"], "True");
        assert_eq!(condition(status, "Progressing")["reason"], "AddingMember");
    }));
    let action = run(cluster, fake.clone(), expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_PROGRESSING));
    let members = fake.member_list().await.unwrap().members;
    assert_eq!(members.len(), 4);
    assert!(members[3].is_learner);
    assert_eq!(members[3].peer_urls, vec![c.peer_url(3)]);
}

#[tokio::test]
async fn status_reports_cluster_id_version_and_the_pod_name_of_a_learner_not_yet_started() {
    let cluster = cluster(5);
    let c = cluster_ref(&cluster);
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    fake.member_add(vec![c.peer_url(3)], true).await.unwrap();
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(
        Some(sts),
        (0..3).map(|i| ready_pod(c.member_name(i))).collect(),
        (0..3).map(|i| pvc(c.pvc_name(i))).collect(),
    );
    // The StatefulSet grows to give the learner its pod.
    expectations.extend(applies("existing", 4, 4));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["clusterID"], "cdf818194e3a8c32");
        assert_eq!(status["version"], "3.6.0");
        assert_eq!(status["replicas"], 4);
        assert_eq!(status["readyReplicas"], 3);
        let learner = &status["members"][3];
        assert_eq!(learner["name"], "demo-3");
        assert_eq!(learner["isLearner"], true);
        assert_eq!(learner["healthy"], false);
        assert!(learner.get("pvcUID").is_none(), "recorded once healthy");
        assert_eq!(status["members"][0]["pvcUID"], "uid-data-demo-0");
        assert_eq!(
            condition(status, "Progressing")["reason"],
            "WaitingForLearner"
        );
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_PROGRESSING));
}

#[tokio::test]
async fn member_whose_pvc_was_re_created_empty_is_removed() {
    let mut cluster = cluster(3);
    let c = cluster_ref(&cluster);
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    let members = fake.member_list().await.unwrap().members;
    cluster.status = Some(crate::crd::EtcdClusterStatus {
        members: members
            .iter()
            .enumerate()
            .map(|(i, m)| crate::crd::MemberStatus {
                name: m.name.clone(),
                id: format!("{:x}", m.id),
                pvc_uid: Some(format!("uid-{}", c.pvc_name(i as i32))),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    // The pod came back with a new, empty claim and can not start.
    fake.stop(&c.peer_url(1));
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(
        Some(sts),
        vec![ready_pod(c.member_name(0)), ready_pod(c.member_name(2))],
        vec![
            pvc(c.pvc_name(0)),
            pvc_with_uid(c.pvc_name(1), "uid-new"),
            pvc(c.pvc_name(2)),
        ],
    );
    expectations.extend(applies("existing", 3, 3));
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            assert_eq!(seen.body["reason"], "MemberRemoved");
            assert!(seen.body["note"].as_str().unwrap().contains("demo-1"));
        },
    ));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(
            condition(status, "Progressing")["reason"],
            "ReplacingMember"
        );
        assert_eq!(
            status["members"][1]["pvcUID"], "uid-data-demo-1",
            "the old record stays until the member is gone"
        );
    }));
    let action = run(cluster, fake.clone(), expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_PROGRESSING));
    let left = fake.member_list().await.unwrap().members;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|m| m.peer_urls[0] != c.peer_url(1)));
}

#[tokio::test]
async fn unreachable_store_keeps_bootstrap_and_pdb_and_reports_members_unhealthy() {
    let mut cluster = cluster(3);
    let c = cluster_ref(&cluster);
    cluster.status = Some(crate::crd::EtcdClusterStatus {
        phase: Some(crate::crd::Phase::Running),
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
        version: Some("3.6.0".into()),
        ..Default::default()
    });
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    for i in 0..3 {
        fake.stop(&c.peer_url(i));
    }
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(Some(sts), vec![], vec![]);
    // No leader: the recovery step looks for a recovery under way.
    expectations.push(expect(
        Method::GET,
        core("configmaps", "demo-bootstrap"),
        Reply::NotFound,
        |_| {},
    ));
    // Without the member list neither --initial-cluster nor the voter count is known.
    expectations.extend(applies("unused", 0, 3).into_iter().skip(1).take(3));
    expectations.push(status_apply(&cluster, |status| {
        let lost = condition(status, "QuorumLost");
        assert_eq!(lost["status"], "True");
        assert_eq!(
            lost["reason"], "NoRecoveryConfigured",
            "only reported: {lost}"
        );
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["replicas"], 3);
        assert_eq!(status["readyReplicas"], 0);
        let members = status["members"].as_array().unwrap();
        assert!(members.iter().all(|m| m["healthy"] == false));
        assert_eq!(condition(status, "Degraded")["reason"], "QuorumUnavailable");
        assert_eq!(status["clusterID"], "cdf818194e3a8c32", "last seen, kept");
        assert_eq!(status["version"], "3.6.0", "last seen, kept");
    }));
    let action = run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_WAITING));
}

#[tokio::test]
async fn rejected_step_records_a_warning_writes_status_and_fails_the_reconcile() {
    let cluster = cluster(5);
    let c = cluster_ref(&cluster);
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    // A learner the operator did not add takes the only learner slot.
    fake.member_add(vec!["http://stranger:2380".into()], true)
        .await
        .unwrap();
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    let mut expectations = observe(
        Some(sts),
        (0..3).map(|i| ready_pod(c.member_name(i))).collect(),
        (0..3).map(|i| pvc(c.pvc_name(i))).collect(),
    );
    expectations.extend(applies("existing", 3, 3));
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            assert_eq!(seen.body["type"], "Warning");
            assert_eq!(seen.body["reason"], "MemberStepFailed");
            assert!(seen.body["note"]
                .as_str()
                .unwrap()
                .contains("too many learner members"));
        },
    ));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["phase"], "Scaling");
    }));
    let error = run(cluster, fake.clone(), expectations)
        .await
        .expect_err("a rejected step fails the reconcile");
    assert_eq!(error.metric_label(), "membership");
    assert_eq!(fake.member_list().await.unwrap().members.len(), 4);
}

#[tokio::test]
async fn paused_cluster_only_gets_status() {
    let mut cluster = cluster(3);
    cluster.spec.paused = true;
    let mut expectations = observe(None, vec![], vec![]);
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["phase"], "Paused");
    }));
    let action = run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_STEADY));
}

#[tokio::test]
async fn deleted_cluster_only_loses_its_finalizer() {
    let mut cluster = cluster(3);
    cluster.metadata.deletion_timestamp =
        Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    let stored = serde_json::to_value(&cluster).unwrap();
    let expectations = vec![expect(
        Method::PATCH,
        cluster_path(),
        Reply::Json(stored),
        |seen| {
            assert_eq!(seen.content_type, "application/json-patch+json");
            assert_eq!(
                seen.body,
                json!([
                    {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                    {"op": "remove", "path": "/metadata/finalizers/0"},
                ])
            );
        },
    )];
    let action = run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::await_change());
}

/// The finalizer's removal once cleanup is done.
fn finalizer_removal(cluster: &EtcdCluster) -> Expect {
    let stored = serde_json::to_value(cluster).unwrap();
    expect(Method::PATCH, cluster_path(), Reply::Json(stored), |seen| {
        assert_eq!(seen.body[1]["op"], "remove");
        assert_eq!(seen.body[1]["path"], "/metadata/finalizers/0");
    })
}

#[tokio::test]
async fn deleted_cluster_without_retention_deletes_its_member_pvcs_first() {
    let mut cluster = cluster(3);
    cluster.spec.storage.retain_on_delete = false;
    cluster.metadata.deletion_timestamp =
        Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    let names = cluster_ref(&cluster);
    // A claim that shares the labels but is no member's stays.
    let claims: Vec<Value> = (0..3)
        .map(|i| pvc(names.pvc_name(i)))
        .chain([pvc("demo-backup".into())])
        .collect();
    let mut expectations = vec![expect(
        Method::GET,
        format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
        Reply::Json(list("PersistentVolumeClaimList", claims)),
        |seen| {
            assert!(
                seen.query
                    .contains("labelSelector=app.kubernetes.io%2Finstance%3Ddemo"),
                "{}",
                seen.query
            );
        },
    )];
    for i in 0..3 {
        let name = names.pvc_name(i);
        expectations.push(expect(
            Method::DELETE,
            core("persistentvolumeclaims", &name),
            Reply::Json(pvc(name.clone())),
            |_| {},
        ));
    }
    expectations.push(finalizer_removal(&cluster));
    let action = run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn deleted_cluster_cleanup_tolerates_a_pvc_already_gone() {
    let mut cluster = cluster(1);
    cluster.spec.storage.retain_on_delete = false;
    cluster.metadata.deletion_timestamp =
        Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    let name = cluster_ref(&cluster).pvc_name(0);
    let expectations = vec![
        expect(
            Method::GET,
            format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
            Reply::Json(list("PersistentVolumeClaimList", vec![pvc(name.clone())])),
            |_| {},
        ),
        // Deleted by someone else between the list and the delete.
        expect(
            Method::DELETE,
            core("persistentvolumeclaims", &name),
            Reply::NotFound,
            |_| {},
        ),
        finalizer_removal(&cluster),
    ];
    let action = run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("a claim already gone is no failure");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn cluster_without_finalizer_gets_it_before_anything_else() {
    let mut cluster = cluster(3);
    cluster.metadata.finalizers = None;
    let stored = serde_json::to_value(&cluster).unwrap();
    let expectations = vec![expect(
        Method::PATCH,
        cluster_path(),
        Reply::Json(stored),
        |seen| {
            assert_eq!(seen.body[1]["op"], "add");
            assert_eq!(seen.body[1]["path"], "/metadata/finalizers");
            assert_eq!(seen.body[1]["value"], json!([FINALIZER]));
        },
    )];
    let action = run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::await_change());
}

#[test]
fn backoff_doubles_up_to_the_steady_interval() {
    assert_eq!(backoff(1), Duration::from_secs(5));
    assert_eq!(backoff(2), Duration::from_secs(10));
    assert_eq!(backoff(4), Duration::from_secs(40));
    assert_eq!(backoff(30), REQUEUE_STEADY);
}

#[test]
fn progressing_clusters_requeue_sooner_than_steady_ones() {
    assert_eq!(
        requeue_after(&Progress::AddingMember(3)),
        REQUEUE_PROGRESSING
    );
    assert_eq!(requeue_after(&Progress::Degraded), REQUEUE_WAITING);
    assert_eq!(requeue_after(&Progress::Stable), REQUEUE_STEADY);
}

#[test]
fn errors_are_labelled_by_their_innermost_cause() {
    let inner = Error::Membership(EtcdError::TooManyLearners);
    let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
        inner,
    )));
    assert_eq!(wrapped.metric_label(), "membership");
}

mod backup_verify;
mod expand;
mod recovery;
mod tls;
mod upgrade;
