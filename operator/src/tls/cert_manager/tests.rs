use serde_json::Value;

use super::*;
use crate::tls::served_names;
use crate::tls::tests::cluster;

fn issuer() -> IssuerRef {
    IssuerRef {
        name: "corp-ca".into(),
        kind: Some("ClusterIssuer".into()),
        group: None,
        duration: Some("2160h".into()),
        renew_before: None,
    }
}

fn spec(kind: CertKind) -> Value {
    let names = served_names(&cluster(), Some("10.0.0.17".parse().unwrap()));
    let object = certificate(&cluster(), kind, &issuer(), &names);
    serde_json::to_value(&object).unwrap()["spec"].clone()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn a_certificate_is_a_cert_manager_v1_object_owned_by_the_cluster() {
    let names = served_names(&cluster(), None);
    let object = certificate(&cluster(), CertKind::Server, &issuer(), &names);
    let value = serde_json::to_value(&object).unwrap();
    assert_eq!(value["apiVersion"], "cert-manager.io/v1");
    assert_eq!(value["kind"], "Certificate");
    assert_eq!(value["metadata"]["name"], "demo-server-tls");
    assert_eq!(value["metadata"]["namespace"], "prod");
    assert_eq!(
        value["metadata"]["ownerReferences"][0]["kind"],
        "EtcdCluster"
    );
}

#[test]
fn served_certificates_name_every_member_the_service_and_its_ip() {
    for kind in [CertKind::Server, CertKind::Peer] {
        let spec = spec(kind);
        assert_eq!(spec["secretName"], kind.secret_name(&cluster()));
        let dns = strings(&spec["dnsNames"]);
        for name in [
            "demo-0.demo-peer.prod.svc",
            "demo-2.demo-peer.prod.svc.cluster.local",
            "demo.prod.svc",
            "localhost",
        ] {
            assert!(dns.contains(&name), "{kind:?} lacks {name}: {dns:?}");
        }
        assert_eq!(strings(&spec["ipAddresses"]), ["10.0.0.17", "127.0.0.1"]);
        assert_eq!(
            strings(&spec["usages"]),
            [
                "digital signature",
                "key encipherment",
                "server auth",
                "client auth"
            ]
        );
    }
}

#[test]
fn client_certificates_have_no_names_and_client_usage_only() {
    let operator = spec(CertKind::OperatorClient);
    assert_eq!(operator["commonName"], "root", "the etcd user with auth on");
    assert_eq!(operator["secretName"], "demo-operator-client-tls");
    let user = spec(CertKind::Client);
    assert_eq!(user["commonName"], "demo-client");
    for spec in [operator, user] {
        assert!(spec.get("dnsNames").is_none() && spec.get("ipAddresses").is_none());
        assert_eq!(
            strings(&spec["usages"]),
            ["digital signature", "key encipherment", "client auth"]
        );
    }
}

#[test]
fn the_issuer_and_lifetimes_are_passed_through_with_defaults() {
    let spec = spec(CertKind::Server);
    assert_eq!(
        spec["issuerRef"],
        serde_json::json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    assert_eq!(spec["duration"], "2160h");
    assert!(spec.get("renewBefore").is_none());
    assert_eq!(spec["privateKey"]["rotationPolicy"], "Always");
    let plain = IssuerRef {
        name: "ns-ca".into(),
        ..Default::default()
    };
    let names = served_names(&cluster(), None);
    let object = certificate(&cluster(), CertKind::Peer, &plain, &names);
    let value = serde_json::to_value(&object).unwrap();
    assert_eq!(value["spec"]["issuerRef"]["kind"], "Issuer");
}
