//! The reconciler when `spec.storage.size` grows past the running
//! StatefulSet's claim template, against the mocked API server.

use super::*;
use crate::status;

/// A three-member cluster asking `size`, whose StatefulSet and bound PVCs
/// have 1Gi; its fake store, and the observe requests.
fn asking(size: &str) -> (EtcdCluster, ClusterRef, Arc<FakeEtcd>, Vec<Expect>) {
    let mut cluster = cluster(3);
    let c = cluster_ref(&cluster);
    let fake = Arc::new(FakeEtcd::bootstrapped(
        &(0..3)
            .map(|i| (c.member_name(i), c.peer_url(i), c.client_url(i)))
            .collect::<Vec<_>>(),
    ));
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    let pvcs = (0..3)
        .map(|i| {
            let mut pvc = pvc(c.pvc_name(i));
            pvc["spec"] = json!({"resources": {"requests": {"storage": "1Gi"}}});
            pvc["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
            pvc
        })
        .collect();
    let observed = observe(
        Some(sts),
        (0..3).map(|i| ready_pod(c.member_name(i))).collect(),
        pvcs,
    );
    cluster.spec.storage.size = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        size.into(),
    ));
    (cluster, c, fake, observed)
}

fn stateful_set_path() -> String {
    format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}")
}

fn template_size(body: &Value) -> &Value {
    &body["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
}

#[tokio::test]
async fn a_larger_size_raises_every_claim_and_renews_the_statefulset_leaving_its_pods() {
    let (cluster, c, fake, mut expectations) = asking("2Gi");
    // ConfigMap and Services as always.
    let mut applied = applies("existing", 3, 3);
    let rest = applied.split_off(3);
    expectations.extend(applied);
    for i in 0..3 {
        expectations.push(expect(
            Method::PATCH,
            core("persistentvolumeclaims", &c.pvc_name(i)),
            Reply::Echo,
            |seen| {
                assert_eq!(seen.content_type, "application/merge-patch+json");
                assert_eq!(
                    seen.body,
                    json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})
                );
            },
        ));
    }
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            assert_eq!(seen.body["reason"], "ExpandingVolumes");
            assert!(seen.body["note"].as_str().unwrap().contains("3"));
        },
    ));
    // Deleted leaving the pods, gone, then applied with the new template.
    expectations.push(expect(
        Method::DELETE,
        stateful_set_path(),
        Reply::Json(json!({"apiVersion": "v1", "kind": "Status", "status": "Success"})),
        |seen| assert_eq!(seen.body["propagationPolicy"], "Orphan"),
    ));
    expectations.push(expect(
        Method::GET,
        stateful_set_path(),
        Reply::NotFound,
        |_| {},
    ));
    expectations.push(apply(stateful_set_path(), |body| {
        assert_eq!(template_size(body), "2Gi");
    }));
    expectations.extend(rest.into_iter().skip(1));
    expectations.push(status_apply(&cluster, |status| {
        let c = condition(status, status::VOLUME_EXPANSION);
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "Resizing");
        let message = c["message"].as_str().unwrap();
        assert!(message.contains("data-demo-2 has 1Gi"), "{message}");
    }));
    run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
}

#[tokio::test]
async fn a_class_that_cannot_expand_keeps_the_template_and_says_why() {
    let (cluster, c, fake, mut expectations) = asking("2Gi");
    let mut applied = applies("existing", 3, 3);
    let rest = applied.split_off(3);
    expectations.extend(applied);
    expectations.push(expect(
        Method::PATCH,
        core("persistentvolumeclaims", &c.pvc_name(0)),
        Reply::Forbidden("only dynamically provisioned pvc can be resized"),
        |_| {},
    ));
    expectations.push(apply(stateful_set_path(), |body| {
        assert_eq!(template_size(body), "1Gi");
    }));
    expectations.extend(rest.into_iter().skip(1));
    expectations.push(status_apply(&cluster, |status| {
        let c = condition(status, status::VOLUME_EXPANSION);
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "NotSupported");
        let message = c["message"].as_str().unwrap();
        assert!(
            message.contains("only dynamically provisioned"),
            "{message}"
        );
    }));
    run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
}

#[tokio::test]
async fn a_smaller_size_changes_nothing_and_says_volumes_cannot_shrink() {
    let (cluster, _, fake, mut expectations) = asking("512Mi");
    let mut applied = applies("existing", 3, 3);
    let rest = applied.split_off(3);
    expectations.extend(applied);
    expectations.push(apply(stateful_set_path(), |body| {
        assert_eq!(template_size(body), "1Gi");
    }));
    expectations.extend(rest.into_iter().skip(1));
    expectations.push(status_apply(&cluster, |status| {
        let c = condition(status, status::VOLUME_EXPANSION);
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "CannotShrink");
    }));
    run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
}
