use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

fn now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap()
}

fn names(dns: &[&str], ips: &[&str]) -> Names {
    Names {
        dns: dns.iter().map(|s| s.to_string()).collect(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

fn request(usage: Usage) -> LeafRequest {
    LeafRequest {
        common_name: "demo".into(),
        names: names(&["demo-0.demo-peer.prod.svc", "localhost"], &["127.0.0.1"]),
        usage,
        validity: Duration::from_secs(3600),
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca.cert_pem())).unwrap();
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies `cert` as a server certificate for `name` at the current time.
fn verify_server(ca: &Ca, cert: &str, name: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    verifier
        .verify_server_cert(
            &der(cert),
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(drop)
}

fn verify_client(ca: &Ca, cert: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    verifier
        .verify_client_cert(&der(cert), &[], UnixTime::now())
        .map(drop)
}

#[test]
fn certificate_from_a_reloaded_ca_chains_to_the_stored_ca_certificate() {
    let ca = Ca::generate("prod/demo ferrocd CA", Timestamp::now()).unwrap();
    let reloaded = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    let leaf = reloaded
        .issue(&request(Usage::ServerAndClient), Timestamp::now())
        .unwrap();
    verify_server(&ca, &leaf.cert_pem, "demo-0.demo-peer.prod.svc").unwrap();
    verify_server(&ca, &leaf.cert_pem, "127.0.0.1").unwrap();
    verify_client(&ca, &leaf.cert_pem).unwrap();
}

#[test]
fn server_certificate_is_refused_for_a_name_it_does_not_carry() {
    let ca = Ca::generate("ca", Timestamp::now()).unwrap();
    let leaf = ca
        .issue(&request(Usage::ServerAndClient), Timestamp::now())
        .unwrap();
    assert!(verify_server(&ca, &leaf.cert_pem, "demo-1.demo-peer.prod.svc").is_err());
}

#[test]
fn client_certificate_is_not_a_server_certificate() {
    let ca = Ca::generate("ca", Timestamp::now()).unwrap();
    let leaf = ca.issue(&request(Usage::Client), Timestamp::now()).unwrap();
    verify_client(&ca, &leaf.cert_pem).unwrap();
    assert!(verify_server(&ca, &leaf.cert_pem, "localhost").is_err());
}

#[test]
fn certificate_of_another_ca_is_refused() {
    let ca = Ca::generate("ca", Timestamp::now()).unwrap();
    let other = Ca::generate("ca", Timestamp::now()).unwrap();
    let leaf = other
        .issue(&request(Usage::ServerAndClient), Timestamp::now())
        .unwrap();
    assert!(verify_client(&ca, &leaf.cert_pem).is_err());
}

#[test]
fn inspect_reads_expiry_names_and_a_fresh_serial() {
    let ca = Ca::generate("ca", now()).unwrap();
    let first = ca.issue(&request(Usage::ServerAndClient), now()).unwrap();
    let second = ca.issue(&request(Usage::ServerAndClient), now()).unwrap();
    let info = inspect(&first.cert_pem).unwrap();
    assert_eq!(
        info.not_after,
        Timestamp::from_second(1_750_003_600).unwrap()
    );
    assert_eq!(info.names, request(Usage::Client).names);
    assert!(!info.serial.is_empty());
    assert!(info
        .serial
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_ne!(info.serial, inspect(&second.cert_pem).unwrap().serial);
}

#[test]
fn ca_with_a_key_of_another_ca_is_refused() {
    let ca = Ca::generate("ca", now()).unwrap();
    let other = Ca::generate("ca", now()).unwrap();
    assert_eq!(
        Ca::from_pem(ca.cert_pem(), other.key_pem()).err(),
        Some(PkiError::Unreadable("CA key (not the certificate's)"))
    );
    assert_eq!(
        Ca::from_pem("garbage", ca.key_pem()).err(),
        Some(PkiError::Unreadable("CA certificate"))
    );
}

#[test]
fn leaf_certificate_is_not_accepted_as_a_ca() {
    let ca = Ca::generate("ca", now()).unwrap();
    let leaf = ca.issue(&request(Usage::ServerAndClient), now()).unwrap();
    assert!(Ca::from_pem(&leaf.cert_pem, &leaf.key_pem).is_err());
}
