//! The reconciler with `spec.tls.auto` against the mocked API server: the
//! CA and certificate Secrets come between the Services and the
//! StatefulSet, and the status reports them.

use k8s_openapi::api::core::v1::Secret;

use super::*;
use crate::controller::certificates::requeue_with_rotation;
use crate::crd::{AutoTls, TlsSpec};
use crate::tls::pki;

const CLUSTER_IP: &str = "10.0.0.17";

fn tls_cluster() -> EtcdCluster {
    let mut cluster = cluster(3);
    cluster.spec.tls = Some(TlsSpec {
        auto: Some(AutoTls::default()),
        secret_refs: None,
        issuer_ref: None,
    });
    cluster
}

/// The applies before the certificates: ConfigMap and Services, the client
/// Service answered with its ClusterIP.
fn applies_before_certificates(cluster: &EtcdCluster) -> Vec<Expect> {
    let mut service =
        serde_json::to_value(builders::client_service(&cluster_ref(cluster))).unwrap();
    service["spec"]["clusterIP"] = json!(CLUSTER_IP);
    let mut all = applies("new", 3, 3);
    all.truncate(2);
    all.push(expect(
        Method::PATCH,
        core("services", NAME),
        Reply::Json(service),
        |_| {},
    ));
    all
}

/// The applies after the certificates: StatefulSet and PDB.
fn applies_after_certificates() -> Vec<Expect> {
    let mut all = applies("new", 3, 3);
    let tail = all.split_off(3);
    drop(all);
    let mut tail = tail.into_iter();
    let stateful_set = tail.next().unwrap();
    let checked_stateful_set = expect(
        Method::PATCH,
        stateful_set.path.clone(),
        Reply::Echo,
        move |seen| {
            (stateful_set.check)(seen);
            let args = seen.body["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .clone();
            assert!(args.contains(&json!("--client-cert-auth=true")), "{args:?}");
            assert!(
                args.contains(&json!("--peer-client-cert-auth=true")),
                "{args:?}"
            );
        },
    );
    std::iter::once(checked_stateful_set).chain(tail).collect()
}

fn secret_of(body: &Value) -> Secret {
    serde_json::from_value(body.clone()).unwrap()
}

fn pem(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn new_tls_cluster_gets_its_ca_and_certificates_before_the_statefulset() {
    let cluster = tls_cluster();
    let mut expectations = observe(None, vec![], vec![]);
    expectations.extend(applies_before_certificates(&cluster));
    expectations.push(expect(
        Method::GET,
        core("secrets", "demo-ca"),
        Reply::NotFound,
        |_| {},
    ));
    expectations.push(apply(core("secrets", "demo-ca"), |body| {
        let secret = secret_of(body);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(pem(&secret, "ca.crt"), pem(&secret, "tls.crt"));
    }));
    for name in [
        "demo-server-tls",
        "demo-peer-tls",
        "demo-operator-client-tls",
        "demo-client-tls",
    ] {
        expectations.push(expect(
            Method::GET,
            core("secrets", name),
            Reply::NotFound,
            |_| {},
        ));
        expectations.push(apply(core("secrets", name), move |body| {
            let secret = secret_of(body);
            assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
            let info = pki::inspect(&pem(&secret, "tls.crt")).unwrap();
            let served = name == "demo-server-tls" || name == "demo-peer-tls";
            assert_eq!(
                info.names.ips.contains(&CLUSTER_IP.parse().unwrap()),
                served,
                "{name}: {:?}",
                info.names
            );
            assert_eq!(
                info.names.dns.contains("demo-2.demo-peer.prod.svc"),
                served,
                "{name}"
            );
        }));
    }
    // Served certificates were issued: member pods get the serials.
    expectations.push(expect(
        Method::GET,
        format!("/api/v1/namespaces/{NS}/pods"),
        Reply::Json(list("PodList", vec![])),
        |_| {},
    ));
    expectations.extend(applies_after_certificates());
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            assert_eq!(seen.body["reason"], "CertificatesIssued");
            let note = seen.body["note"].as_str().unwrap();
            assert!(note.contains("Server (Missing)"), "{note}");
        },
    ));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["clientEndpoint"], "https://demo.prod.svc:2379");
        assert_eq!(status["clientSecret"], "demo-client-tls");
        let ready = condition(status, "CertificatesReady");
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("True"), &json!("Issued"))
        );
        let secrets: Vec<&str> = status["tls"]["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["secret"].as_str().unwrap())
            .collect();
        assert_eq!(
            secrets,
            [
                "demo-ca",
                "demo-server-tls",
                "demo-peer-tls",
                "demo-operator-client-tls",
                "demo-client-tls"
            ]
        );
    }));
    let action = run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(REQUEUE_PROGRESSING));
}

#[tokio::test]
async fn unreadable_ca_is_reported_and_never_overwritten() {
    let cluster = tls_cluster();
    let mut expectations = observe(None, vec![], vec![]);
    expectations.extend(applies_before_certificates(&cluster));
    let broken = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "demo-ca", "namespace": NS},
        "type": "kubernetes.io/tls",
        // "not a certificate", base64
        "data": {"ca.crt": "bm90IGEgY2VydGlmaWNhdGU=", "tls.crt": "bm90IGEgY2VydGlmaWNhdGU=", "tls.key": "bm90IGEgY2VydGlmaWNhdGU="},
    });
    expectations.push(expect(
        Method::GET,
        core("secrets", "demo-ca"),
        Reply::Json(broken),
        |_| {},
    ));
    expectations.extend(applies_after_certificates());
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            assert_eq!(seen.body["type"], "Warning");
            assert_eq!(seen.body["reason"], "CAUnreadable");
        },
    ));
    expectations.push(status_apply(&cluster, |status| {
        let ready = condition(status, "CertificatesReady");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "CAUnreadable");
        assert!(ready["message"].as_str().unwrap().contains("demo-ca"));
    }));
    run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds: the condition carries the problem");
}

#[test]
fn certificate_due_before_the_next_requeue_brings_it_forward() {
    let now = Timestamp::from_second(1_000_000).unwrap();
    let soon = Timestamp::from_second(1_000_060).unwrap();
    let late = Timestamp::from_second(2_000_000).unwrap();
    assert_eq!(
        requeue_with_rotation(REQUEUE_STEADY, Some(soon), now),
        Duration::from_secs(60)
    );
    assert_eq!(
        requeue_with_rotation(REQUEUE_STEADY, Some(late), now),
        REQUEUE_STEADY
    );
    assert_eq!(
        requeue_with_rotation(REQUEUE_STEADY, None, now),
        REQUEUE_STEADY
    );
    let past = Timestamp::from_second(999_000).unwrap();
    assert_eq!(
        requeue_with_rotation(REQUEUE_STEADY, Some(past), now),
        Duration::from_secs(1)
    );
}

/// The CA Secret and the four certificate Secrets of a running `auto`
/// cluster, the certificates issued for the rotation request `honoured`.
fn issued_secrets(cluster: &EtcdCluster, honoured: Option<&str>) -> Vec<(String, Value)> {
    use crate::tls::ca_rotation::CaSecret;
    use crate::tls::{pki::Ca, CertKind, CertSecret};
    let c = cluster_ref(cluster);
    let now = Timestamp::now();
    let ca = Ca::generate("demo CA", now).unwrap();
    let stored = CaSecret {
        cert_pem: ca.cert_pem().to_string(),
        key_pem: ca.key_pem().to_string(),
        bundle: ca.cert_pem().to_string(),
        next: None,
        request: None,
        since: None,
    };
    let mut all = vec![(
        "demo-ca".to_string(),
        serde_json::to_value(stored.secret(&c, "demo-ca".into())).unwrap(),
    )];
    let names = crate::tls::served_names(&c, Some(CLUSTER_IP.parse().unwrap()));
    let validity = AutoTls::default().durations().unwrap().validity;
    for kind in CertKind::ALL {
        let issued = ca.issue(&kind.request(&c, &names, validity), now).unwrap();
        let contents = CertSecret {
            ca_pem: stored.bundle.clone(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        let name = kind.secret_name(&c);
        let secret = crate::tls::secret(&c, name.clone(), &contents, honoured);
        all.push((name, serde_json::to_value(secret).unwrap()));
    }
    all
}

/// A reconcile that runs before the status recording a rotation request
/// reaches the operator's cache (the cluster it reads lacks
/// `lastRotationRequest`) must not issue the certificates again: each
/// Secret says which request its certificate answered.
#[tokio::test]
async fn a_rotation_request_each_secret_already_answered_is_not_issued_again_on_a_stale_status() {
    let mut cluster = tls_cluster();
    cluster
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(crate::crd::ROTATE_ANNOTATION.into(), "r1".into());
    let mut expectations = observe(None, vec![], vec![]);
    expectations.extend(applies_before_certificates(&cluster));
    for (name, secret) in issued_secrets(&cluster, Some("r1")) {
        expectations.push(expect(
            Method::GET,
            core("secrets", &name),
            Reply::Json(secret),
            |_| {},
        ));
    }
    // No Secret written, no pod nudged, no CertificatesIssued event.
    expectations.extend(applies_after_certificates());
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["tls"]["lastRotationRequest"], "r1");
        let ready = condition(status, "CertificatesReady");
        assert_eq!(ready["status"], "True", "{ready}");
    }));
    run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds");
}

/// The same Secrets answering an older request: the new one reissues
/// every certificate, and each Secret records it.
#[tokio::test]
async fn a_new_rotation_request_reissues_and_each_secret_records_it() {
    let mut cluster = tls_cluster();
    cluster
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(crate::crd::ROTATE_ANNOTATION.into(), "r2".into());
    let mut expectations = observe(None, vec![], vec![]);
    expectations.extend(applies_before_certificates(&cluster));
    for (name, secret) in issued_secrets(&cluster, Some("r1")) {
        let leaf = name != "demo-ca";
        let old = secret.clone();
        expectations.push(expect(
            Method::GET,
            core("secrets", &name),
            Reply::Json(secret),
            |_| {},
        ));
        if leaf {
            expectations.push(apply(core("secrets", &name), move |body| {
                let new = secret_of(body);
                assert_eq!(
                    crate::tls::honoured_request(&new),
                    Some("r2"),
                    "{name}: {:?}",
                    new.metadata.annotations
                );
                assert_ne!(
                    pem(&new, "tls.crt"),
                    pem(&secret_of(&old), "tls.crt"),
                    "{name} reissued"
                );
            }));
        }
    }
    expectations.push(expect(
        Method::GET,
        format!("/api/v1/namespaces/{NS}/pods"),
        Reply::Json(list("PodList", vec![])),
        |_| {},
    ));
    expectations.extend(applies_after_certificates());
    expectations.push(expect(
        Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        Reply::Echo,
        |seen| {
            let note = seen.body["note"].as_str().unwrap();
            assert!(note.contains("Server (Requested)"), "{note}");
        },
    ));
    expectations.push(status_apply(&cluster, |status| {
        assert_eq!(status["tls"]["lastRotationRequest"], "r2");
    }));
    run(cluster, Arc::new(FakeEtcd::default()), expectations)
        .await
        .expect("reconcile succeeds");
}
