//! A listener's trusted CA file is read again when it changes: a CA added
//! to the bundle is trusted by the next handshake, a CA removed from it no
//! longer is, with no restart (what a CA rotation without downtime needs).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

use super::ServerTls;
use crate::tls::{CertSource, TlsOptions, TlsSide};

struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    TestCa {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate and key signed by `ca`, valid for localhost.
fn leaf(ca: &TestCa, usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Replaces `path` by a rename, as the kubelet and rotation tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TLS 1.2 handshake (the server checks the client certificate inside
/// it) presenting `identity`, trusting `trust`.
async fn handshake(port: u16, trust: &str, identity: &(String, String)) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(trust.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(identity.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_ca_added_to_or_removed_from_the_trusted_ca_file_counts_at_the_next_handshake() {
    let (old, new) = (ca("old"), ca("new"));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, trusted) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    let (server_cert, server_key) = leaf(&old, ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(&cert, server_cert).unwrap();
    std::fs::write(&key, server_key).unwrap();
    std::fs::write(&trusted, &old.pem).unwrap();
    let side = TlsSide {
        side: "client",
        cert: CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        trusted_ca: Some(trusted.clone()),
        client_cert_auth: true,
        crl: None,
        allowed_cn: None,
        allowed_hostname: None,
        self_signed: false,
        options: TlsOptions::default(),
    };
    let server = ServerTls::new(side, &[]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move { server.accept(tcp).await });
        }
    });
    let old_client = leaf(&old, ExtendedKeyUsagePurpose::ClientAuth);
    let new_client = leaf(&new, ExtendedKeyUsagePurpose::ClientAuth);

    assert!(handshake(port, &old.pem, &old_client).await.is_ok());
    assert!(
        handshake(port, &old.pem, &new_client).await.is_err(),
        "a client of a CA not in the file is refused"
    );

    replace(&trusted, &format!("{}{}", old.pem, new.pem));
    assert_eq!(handshake(port, &old.pem, &new_client).await, Ok(()));
    assert_eq!(handshake(port, &old.pem, &old_client).await, Ok(()));

    replace(&trusted, &new.pem);
    assert!(
        handshake(port, &old.pem, &old_client).await.is_err(),
        "a CA dropped from the file is no longer trusted"
    );
    assert_eq!(handshake(port, &old.pem, &new_client).await, Ok(()));
}
