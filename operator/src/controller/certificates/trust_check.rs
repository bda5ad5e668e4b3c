//! Whether every member has caught up with a CA rotation phase: a TLS 1.2
//! handshake with each member's client and peer port, trusting only what
//! the phase says members must serve, presenting a client certificate of
//! the CA members must trust. TLS 1.2 is used because there the server
//! checks the client certificate inside the handshake; with TLS 1.3 a
//! refusal only shows on the first read.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::builders::{ClusterRef, CLIENT_PORT, PEER_PORT};
use crate::tls::pki::Issued;

/// How long one handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// `Ok` when every member pod's client and peer ports complete a handshake
/// verified against `trust` while presenting `identity`; `Err` names the
/// first that did not, and why.
pub async fn members_accept(
    client: &Client,
    cluster: &ClusterRef,
    trust: &str,
    identity: &Issued,
) -> Result<(), String> {
    let config = Arc::new(client_config(trust, identity)?);
    let pods = Api::<Pod>::namespaced(client.clone(), cluster.namespace());
    let members = pods
        .list(&ListParams::default().labels(&cluster.label_selector()))
        .await
        .map_err(|e| format!("listing member pods: {e}"))?;
    let mut ordinals: Vec<i32> = members
        .items
        .iter()
        .filter_map(|pod| cluster.ordinal_of_member(&pod.name_any()))
        .collect();
    ordinals.sort_unstable();
    if ordinals.is_empty() {
        return Err("no member pods".into());
    }
    for ordinal in ordinals {
        let host = member_host(cluster, ordinal);
        for port in [CLIENT_PORT, PEER_PORT] {
            handshake(config.clone(), &host, port as u16)
                .await
                .map_err(|e| format!("{host}:{port}: {e}"))?;
        }
    }
    Ok(())
}

async fn handshake(config: Arc<rustls::ClientConfig>, host: &str, port: u16) -> Result<(), String> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map(drop)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())
}

fn client_config(trust: &str, identity: &Issued) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(trust.as_bytes()) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// The host member `ordinal` advertises, from its peer URL.
fn member_host(cluster: &ClusterRef, ordinal: i32) -> String {
    let url = cluster.peer_url(ordinal);
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    rest.rsplit_once(':')
        .map_or(rest, |(host, _)| host)
        .to_string()
}
