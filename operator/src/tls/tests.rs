use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::pki::{Ca, Usage};
use super::*;
use crate::crd::{AutoTls, EtcdCluster, EtcdClusterSpec, TlsSecretRefs};

const HOUR: Duration = Duration::from_secs(3600);

pub(super) fn cluster() -> ClusterRef {
    let spec = EtcdClusterSpec {
        tls: Some(TlsSpec {
            auto: Some(AutoTls::default()),
            secret_refs: None,
            issuer_ref: None,
        }),
        ..Default::default()
    };
    let mut resource = EtcdCluster::new("demo", spec);
    resource.metadata.namespace = Some("prod".into());
    resource.metadata.uid = Some("9d1e6a3c-65a3-4f59-a3f5-0d7b8e2b1c44".into());
    ClusterRef::new(&resource).unwrap()
}

pub(super) fn now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap()
}

fn due(now: Timestamp, requested: bool) -> Due {
    Due {
        now,
        rotate_before: HOUR,
        requested,
    }
}

/// A certificate of `kind` issued by `ca` at `at`, valid 10 hours, as its Secret holds it.
fn issued(ca: &Ca, kind: CertKind, names: &Names, at: Timestamp) -> CertSecret {
    let leaf = ca
        .issue(&kind.request(&cluster(), names, 10 * HOUR), at)
        .unwrap();
    CertSecret {
        ca_pem: ca.cert_pem().to_string(),
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    }
}

#[test]
fn served_names_cover_every_possible_member_in_all_dns_forms() {
    let names = served_names(&cluster(), None);
    for ordinal in 0..MAX_REPLICAS {
        for name in [
            format!("demo-{ordinal}.demo-peer"),
            format!("demo-{ordinal}.demo-peer.prod"),
            format!("demo-{ordinal}.demo-peer.prod.svc"),
            format!("demo-{ordinal}.demo-peer.prod.svc.cluster.local"),
        ] {
            assert!(names.dns.contains(&name), "{name} missing");
        }
    }
    assert!(!names
        .dns
        .contains(&format!("demo-{MAX_REPLICAS}.demo-peer.prod.svc")));
}

#[test]
fn served_names_cover_the_client_service_and_localhost() {
    let ip: IpAddr = "10.0.0.17".parse().unwrap();
    let names = served_names(&cluster(), Some(ip));
    for name in [
        "demo",
        "demo.prod",
        "demo.prod.svc",
        "demo.prod.svc.cluster.local",
        "localhost",
    ] {
        assert!(names.dns.contains(name), "{name} missing");
    }
    assert_eq!(
        names.ips,
        ["127.0.0.1".parse().unwrap(), ip].into_iter().collect()
    );
}

#[test]
fn advertised_urls_of_a_tls_cluster_are_https_and_among_the_served_names() {
    let cluster = cluster();
    let names = served_names(&cluster, None);
    for url in [
        cluster.peer_url(2),
        cluster.client_url(2),
        cluster.client_endpoint(),
    ] {
        let host = url
            .strip_prefix("https://")
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| panic!("{url} is not https"));
        assert!(names.dns.contains(host), "{host} not served");
    }
}

#[test]
fn members_and_operator_get_distinct_certificates_with_fitting_usages() {
    let cluster = cluster();
    let names = served_names(&cluster, None);
    let server = CertKind::Server.request(&cluster, &names, HOUR);
    assert_eq!(server.usage, Usage::ServerAndClient);
    assert_eq!(server.names, names);
    let operator = CertKind::OperatorClient.request(&cluster, &names, HOUR);
    assert_eq!(operator.usage, Usage::Client);
    assert_eq!(operator.common_name, "root");
    assert!(operator.names.dns.is_empty());
    let user = CertKind::Client.request(&cluster, &names, HOUR);
    assert_eq!(user.common_name, "demo-client");
    let secrets: std::collections::BTreeSet<String> = CertKind::ALL
        .iter()
        .map(|k| k.secret_name(&cluster))
        .chain([ca_secret_name(&cluster)])
        .collect();
    assert_eq!(secrets.len(), 5, "{secrets:?}");
}

#[test]
fn auto_uses_the_operators_secrets_and_secret_refs_the_users() {
    let cluster = cluster();
    let auto = TlsSpec {
        auto: Some(AutoTls::default()),
        secret_refs: None,
        issuer_ref: None,
    };
    assert_eq!(
        secret_names(&cluster, &auto),
        SecretNames {
            server: "demo-server-tls".into(),
            peer: "demo-peer-tls".into(),
            operator_client: "demo-operator-client-tls".into(),
            client: Some("demo-client-tls".into()),
        }
    );
    let refs = TlsSpec {
        auto: None,
        secret_refs: Some(TlsSecretRefs {
            server: "s".into(),
            peer: "p".into(),
            operator_client: "o".into(),
            client: None,
        }),
        issuer_ref: None,
    };
    let names = secret_names(&cluster, &refs);
    assert_eq!((names.server.as_str(), names.peer.as_str()), ("s", "p"));
    assert_eq!(names.client, None);
}

#[test]
fn current_certificate_is_kept() {
    let ca = Ca::generate("ca", now()).unwrap();
    let names = served_names(&cluster(), None);
    let secret = issued(&ca, CertKind::Server, &names, now());
    let later = Timestamp::from_second(now().as_second() + 3600).unwrap();
    assert_eq!(
        reissue(
            CertKind::Server,
            Some(&secret),
            ca.cert_pem(),
            &names,
            &due(later, false)
        ),
        None
    );
}

#[test]
fn certificate_inside_the_rotate_before_window_is_reissued() {
    let ca = Ca::generate("ca", now()).unwrap();
    let names = served_names(&cluster(), None);
    let secret = issued(&ca, CertKind::Peer, &names, now());
    // Valid 10 hours, rotated 1 hour before: due at 9 hours.
    let just_before = Timestamp::from_second(now().as_second() + 9 * 3600 - 1).unwrap();
    let at = Timestamp::from_second(now().as_second() + 9 * 3600).unwrap();
    assert_eq!(
        reissue(
            CertKind::Peer,
            Some(&secret),
            ca.cert_pem(),
            &names,
            &due(just_before, false)
        ),
        None
    );
    assert_eq!(
        reissue(
            CertKind::Peer,
            Some(&secret),
            ca.cert_pem(),
            &names,
            &due(at, false)
        ),
        Some(Reissue::Expiring)
    );
    let info = pki::inspect(&secret.cert_pem).unwrap();
    assert_eq!(due(now(), false).rotation_at(&info), at);
}

#[test]
fn missing_foreign_renamed_and_requested_certificates_are_reissued() {
    let ca = Ca::generate("ca", now()).unwrap();
    let other = Ca::generate("ca", now()).unwrap();
    let names = served_names(&cluster(), None);
    let current = issued(&ca, CertKind::Server, &names, now());
    let check = |secret: Option<&CertSecret>, requested| {
        reissue(
            CertKind::Server,
            secret,
            ca.cert_pem(),
            &names,
            &due(now(), requested),
        )
    };
    assert_eq!(check(None, false), Some(Reissue::Missing));
    let garbage = CertSecret {
        cert_pem: "not a certificate".into(),
        ..current.clone()
    };
    assert_eq!(check(Some(&garbage), false), Some(Reissue::Unreadable));
    let foreign = issued(&other, CertKind::Server, &names, now());
    assert_eq!(check(Some(&foreign), false), Some(Reissue::OtherCa));
    let old_names = served_names(&cluster(), Some("10.0.0.9".parse().unwrap()));
    let renamed = issued(&ca, CertKind::Server, &old_names, now());
    assert_eq!(check(Some(&renamed), false), Some(Reissue::NamesChanged));
    assert_eq!(check(Some(&current), true), Some(Reissue::Requested));
}

#[test]
fn client_certificates_do_not_follow_the_served_names() {
    let ca = Ca::generate("ca", now()).unwrap();
    let names = served_names(&cluster(), None);
    let client = issued(&ca, CertKind::Client, &names, now());
    let with_ip = served_names(&cluster(), Some("10.0.0.9".parse().unwrap()));
    assert_eq!(
        reissue(
            CertKind::Client,
            Some(&client),
            ca.cert_pem(),
            &with_ip,
            &due(now(), false)
        ),
        None
    );
}

#[test]
fn certificate_secret_is_a_kubernetes_tls_secret_owned_by_the_cluster() {
    let cluster = cluster();
    let contents = CertSecret {
        ca_pem: "CA".into(),
        cert_pem: "CERT".into(),
        key_pem: "KEY".into(),
    };
    let secret = secret(&cluster, "demo-server-tls".into(), &contents, None);
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("prod"));
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("EtcdCluster", "demo")
    );
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "ferrocd-operator"
    );
    assert_eq!(CertSecret::read(&secret), Some(contents));
}

#[test]
fn a_certificate_whose_trust_bundle_changed_keeps_its_key() {
    let ca = Ca::generate("ca", now()).unwrap();
    let names = served_names(&cluster(), None);
    let current = issued(&ca, CertKind::Server, &names, now());
    let stale = CertSecret {
        ca_pem: "old bundle".into(),
        ..current.clone()
    };
    assert_eq!(
        reissue(
            CertKind::Server,
            Some(&stale),
            ca.cert_pem(),
            &names,
            &due(now(), false)
        ),
        Some(Reissue::TrustChanged)
    );
}
