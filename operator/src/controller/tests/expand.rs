//! The reconciler when `spec.storage.size` grows past the running
//! StatefulSet's claim template, against the mocked API server.

use super::*;
use crate::status;

/// A three-member cluster asking `size`, whose StatefulSet and bound PVCs
/// have 1Gi; its fake store, and the observe requests.
fn asking(size: &str) -> (EtcdCluster, ClusterRef, Arc<FakeEtcd>, Vec<Expect>) {
    let (mut cluster, c, fake) = three_members();
    let sts = serde_json::to_value(builders::stateful_set(&c, &cluster.spec, 3)).unwrap();
    assert_eq!(template_size(&sts), "1Gi");
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

/// One reconcile of a cluster asking `size` (see [`asking`]): the
/// requests `before_stateful_set` come between the Services and the
/// StatefulSet, which is applied with a claim template of `template`;
/// `status` checks the status written.
async fn reconcile_asking(
    size: &str,
    before_stateful_set: impl FnOnce(&ClusterRef) -> Vec<Expect>,
    template: &'static str,
    status: impl FnOnce(&Value) + Send + 'static,
) {
    let (cluster, c, fake, mut expectations) = asking(size);
    // ConfigMap and Services as always; then the StatefulSet and the PDB.
    let mut applied = applies("existing", 3, 3);
    let after = applied.split_off(3);
    expectations.extend(applied);
    expectations.extend(before_stateful_set(&c));
    expectations.push(apply(stateful_set_path(), move |body| {
        assert_eq!(template_size(body), template);
    }));
    expectations.extend(after.into_iter().skip(1));
    expectations.push(status_apply(&cluster, status));
    run(cluster, fake, expectations)
        .await
        .expect("reconcile succeeds");
}

fn volume_expansion(status: &Value) -> &Value {
    condition(status, status::VOLUME_EXPANSION)
}

fn stateful_set_path() -> String {
    format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}")
}

fn template_size(body: &Value) -> &Value {
    &body["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
}

#[tokio::test]
async fn a_larger_size_raises_every_claim_and_renews_the_statefulset_leaving_its_pods() {
    let before = |c: &ClusterRef| {
        let mut all: Vec<Expect> = (0..3)
            .map(|i| {
                expect(
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
                )
            })
            .collect();
        all.push(expect(
            Method::POST,
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            Reply::Echo,
            |seen| {
                assert_eq!(seen.body["reason"], "ExpandingVolumes");
                assert!(seen.body["note"].as_str().unwrap().contains("3"));
            },
        ));
        // Deleted leaving the pods, gone, then applied with the new
        // template.
        all.push(expect(
            Method::DELETE,
            stateful_set_path(),
            Reply::Json(json!({"apiVersion": "v1", "kind": "Status", "status": "Success"})),
            |seen| assert_eq!(seen.body["propagationPolicy"], "Orphan"),
        ));
        all.push(expect(
            Method::GET,
            stateful_set_path(),
            Reply::NotFound,
            |_| {},
        ));
        all
    };
    reconcile_asking("2Gi", before, "2Gi", |status| {
        let c = volume_expansion(status);
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "Resizing");
        let message = c["message"].as_str().unwrap();
        assert!(message.contains("data-demo-2 has 1Gi"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn a_class_that_cannot_expand_keeps_the_template_and_says_why() {
    let before = |c: &ClusterRef| {
        vec![expect(
            Method::PATCH,
            core("persistentvolumeclaims", &c.pvc_name(0)),
            Reply::Forbidden("only dynamically provisioned pvc can be resized"),
            |_| {},
        )]
    };
    reconcile_asking("2Gi", before, "1Gi", |status| {
        let c = volume_expansion(status);
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "NotSupported");
        let message = c["message"].as_str().unwrap();
        assert!(
            message.contains("only dynamically provisioned"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_smaller_size_changes_nothing_and_says_volumes_cannot_shrink() {
    reconcile_asking(
        "512Mi",
        |_| Vec::new(),
        "1Gi",
        |status| {
            let c = volume_expansion(status);
            assert_eq!(c["status"], "False");
            assert_eq!(c["reason"], "CannotShrink");
        },
    )
    .await;
}
