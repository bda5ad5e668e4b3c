use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::{Request, Response};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use super::*;
use crate::builders::{stateful_set, ClusterRef};
use crate::crd::EtcdClusterSpec;

const NS: &str = "prod";
const NAME: &str = "demo";

fn cluster() -> EtcdCluster {
    let mut cluster = EtcdCluster::new(NAME, EtcdClusterSpec::default());
    cluster.metadata.namespace = Some(NS.into());
    cluster.metadata.uid = Some("9d1e6a3c-65a3-4f59-a3f5-0d7b8e2b1c44".into());
    cluster.metadata.resource_version = Some("1".into());
    cluster
}

/// A member pod as the StatefulSet controller creates it: the template's labels.
fn member_pod() -> Pod {
    let sts = stateful_set(
        &ClusterRef::new(&cluster()).unwrap(),
        &EtcdClusterSpec::default(),
        3,
    );
    let template = sts.spec.unwrap().template.metadata.unwrap();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-0")),
            namespace: Some(NS.into()),
            labels: template.labels,
            resource_version: Some("2".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A member PVC as the StatefulSet controller creates it: the selector's labels.
fn member_pvc() -> PersistentVolumeClaim {
    let sts = stateful_set(
        &ClusterRef::new(&cluster()).unwrap(),
        &EtcdClusterSpec::default(),
        3,
    );
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(format!("data-{NAME}-0")),
            namespace: Some(NS.into()),
            labels: sts.spec.unwrap().selector.match_labels,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Whether `labels` satisfy a selector of `key=value` and `key` (exists) terms.
fn selects(selector: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
    selector.split(',').all(|term| match term.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(term),
    })
}

#[test]
fn member_pods_and_pvcs_map_to_their_cluster() {
    let expected = Some(ObjectRef::<EtcdCluster>::new(NAME).within(NS));
    assert_eq!(cluster_of_member_object(&member_pod()), expected);
    assert_eq!(cluster_of_member_object(&member_pvc()), expected);
}

#[test]
fn object_without_instance_label_maps_to_no_cluster() {
    let mut pod = member_pod();
    pod.metadata.labels = None;
    assert_eq!(cluster_of_member_object(&pod), None);
}

#[test]
fn member_selector_matches_the_labels_pods_and_pvcs_get() {
    assert!(selects(MEMBER_OBJECTS_SELECTOR, member_pod().labels()));
    assert!(selects(MEMBER_OBJECTS_SELECTOR, member_pvc().labels()));
    let other_app = [("app.kubernetes.io/name".to_string(), "nginx".to_string())].into();
    assert!(!selects(MEMBER_OBJECTS_SELECTOR, &other_app));
}

#[test]
fn managed_selector_matches_the_objects_the_operator_applies() {
    let sts = stateful_set(
        &ClusterRef::new(&cluster()).unwrap(),
        &EtcdClusterSpec::default(),
        3,
    );
    assert!(selects(MANAGED_OBJECTS_SELECTOR, sts.labels()));
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// A mock API server for the whole controller: lists return the cluster
/// (for `etcdclusters`) or nothing; the first pod watch answers with one
/// change of a member pod once `changed` is notified; every other watch
/// stays open without events.
async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    changed: Arc<Notify>,
) {
    let mut open_watches = Vec::new();
    let mut pod_watches = 0;
    while let Some((request, send)) = handle.next_request().await {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        if !query.contains("watch=true") {
            let items = if path.ends_with("/etcdclusters") {
                vec![serde_json::to_value(cluster()).unwrap()]
            } else {
                vec![]
            };
            let body = serde_json::to_vec(&list(items)).unwrap();
            send.send_response(Response::new(Body::from(body)));
        } else if path == format!("/api/v1/namespaces/{NS}/pods") && pod_watches == 0 {
            pod_watches += 1;
            assert!(
                query.contains("labelSelector=app.kubernetes.io%2Fname%3Dferrocd"),
                "pods are watched by the member selector: {query}"
            );
            let changed = changed.clone();
            tokio::spawn(async move {
                changed.notified().await;
                let event = json!({"type": "MODIFIED", "object": member_pod()});
                let mut line = serde_json::to_vec(&event).unwrap();
                line.push(b'\n');
                send.send_response(Response::new(Body::from(line)));
            });
        } else {
            open_watches.push(send);
        }
    }
}

#[tokio::test]
async fn member_pod_change_reconciles_its_cluster() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let changed = Arc::new(Notify::new());
    let server = tokio::spawn(serve(handle, changed.clone()));
    let client = Client::new(service, NS);
    let (reconciled, mut reconciles) = mpsc::unbounded_channel();
    let ctx = Arc::new((reconciled, changed));
    let controller = tokio::spawn(
        controller(&client, Some(NS))
            .run(
                |cluster: Arc<EtcdCluster>,
                 ctx: Arc<(mpsc::UnboundedSender<String>, Arc<Notify>)>| async move {
                    ctx.0.send(cluster.name_any()).unwrap();
                    // Only now does the pod change: a second reconcile can come from nothing else.
                    ctx.1.notify_one();
                    Ok::<_, Infallible>(Action::await_change())
                },
                |_, _: &Infallible, _| Action::await_change(),
                ctx,
            )
            .for_each(|_| async {}),
    );
    let first = tokio::time::timeout(Duration::from_secs(10), reconciles.recv()).await;
    assert_eq!(
        first.expect("the listed cluster reconciles"),
        Some(NAME.to_string())
    );
    let second = tokio::time::timeout(Duration::from_secs(10), reconciles.recv()).await;
    assert_eq!(
        second.expect("the pod change reconciles the cluster"),
        Some(NAME.to_string())
    );
    controller.abort();
    server.abort();
}
