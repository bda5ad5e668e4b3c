//! Accepting TLS connections: the listener's certificate, the check of
//! the connecting party's certificate, and the handshakes run beside the
//! accept loop so that a slow or hostile client holds up nobody else.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use super::files::{self, Reloading};
use super::{CertSource, TlsError, TlsSide};

/// How long a handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections waiting to be served once their handshake is done.
const ACCEPTED_BACKLOG: usize = 128;

/// A listener's TLS configuration, current with the files on disk.
pub struct ServerTls {
    side: TlsSide,
    config: Reloading<ServerConfig>,
}

impl ServerTls {
    /// Reads the files and builds the configuration; `alpn` lists the
    /// application protocols offered (`h2` for gRPC, `http/1.1` for the
    /// HTTP endpoints).
    pub fn new(side: TlsSide, alpn: &[&[u8]]) -> Result<Arc<Self>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let built = side.clone();
        let config = Reloading::new(side.side, side.files(), move || {
            let mut config = build(&built)?;
            config.alpn_protocols = alpn.clone();
            Ok(config)
        })?;
        Ok(Arc::new(ServerTls { side, config }))
    }

    /// Runs the TLS handshake on `tcp` and checks the connecting party's
    /// certificate against `--peer-cert-allowed-cn/-hostname`.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let acceptor = TlsAcceptor::from(self.config.get());
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if self.side.allowed_cn.is_some() || self.side.allowed_hostname.is_some() {
            let (_, session) = tls.get_ref();
            let leaf = session
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or("no client certificate")?;
            check_identity(&self.side, leaf.as_ref())?;
        }
        Ok(tls)
    }

    /// The connections accepted on `listener`, each once its handshake
    /// succeeded. Failed handshakes are logged with the cause (as etcd's
    /// "rejected connection" lines) and dropped.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    // The server stopped: stop accepting.
                    _ = tx.closed() => return,
                };
                let (tcp, addr) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("accepting a {} connection: {e}", self.side.side);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (tls, sender) = (self.clone(), tx.clone());
                tokio::spawn(async move {
                    match tls.accept(tcp).await {
                        Ok(stream) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Err(e) => warn!(
                            remote = %addr,
                            "rejected {} connection: {e}",
                            tls.side.side
                        ),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// The server configuration for `side` from its files as they are now.
fn build(side: &TlsSide) -> Result<ServerConfig, TlsError> {
    let name = side.side;
    let CertSource::Files { cert, key } = &side.cert else {
        return Err(TlsError::Auto {
            side: name,
            what: "the self-signed certificate was not made before serving".into(),
        });
    };
    let chain = files::certs(name, cert)?;
    let key = files::key(name, key)?;
    let provider = side.options.provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&side.options.versions)
        .map_err(|source| TlsError::Config { side: name, source })?;
    let builder = if side.requires_client_cert() {
        let ca = side.trusted_ca.as_ref().ok_or_else(|| TlsError::Verifier {
            side: name,
            what: format!(
                "--{}client-cert-auth needs --{}trusted-ca-file",
                prefix(name),
                prefix(name)
            ),
        })?;
        let mut verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(files::roots(name, ca)?),
            provider,
        );
        if let Some(crl) = &side.crl {
            // As etcd: the client's own certificate is looked up by serial;
            // a CA without a list in the file is not an error.
            verifier = verifier
                .with_crls(files::crls(name, crl)?)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let verifier = verifier.build().map_err(|e| TlsError::Verifier {
            side: name,
            what: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config { side: name, source })
}

fn prefix(side: &str) -> &'static str {
    if side == "peer" {
        "peer-"
    } else {
        ""
    }
}

/// `--peer-cert-allowed-cn` and `--peer-cert-allowed-hostname`: the
/// connecting member's certificate must carry that common name, or be
/// valid for that host name (a DNS or IP subject alternative name).
fn check_identity(side: &TlsSide, der: &[u8]) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    if let Some(cn) = &side.allowed_cn {
        let found: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        if !found.iter().any(|f| f == cn) {
            return Err(format!(
                "client certificate common name {found:?} is not the allowed {cn:?}"
            ));
        }
    }
    if let Some(host) = &side.allowed_hostname {
        let names = certificate_names(&cert);
        if !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            return Err(format!(
                "client certificate is valid for {names:?}, not the allowed host name {host:?}"
            ));
        }
    }
    Ok(())
}

/// The DNS names and IP addresses a certificate is valid for.
fn certificate_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsOptions;

    fn cert(cn: &str, names: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn peer(cn: Option<&str>, host: Option<&str>) -> TlsSide {
        TlsSide {
            side: "peer",
            cert: CertSource::Auto,
            trusted_ca: None,
            client_cert_auth: true,
            crl: None,
            allowed_cn: cn.map(str::to_string),
            allowed_hostname: host.map(str::to_string),
            self_signed: false,
            options: TlsOptions::default(),
        }
    }

    #[test]
    fn allowed_cn_must_match_the_certificates_common_name() {
        let side = peer(Some("member"), None);
        assert!(check_identity(&side, &cert("member", &["m1.example"])).is_ok());
        let e = check_identity(&side, &cert("intruder", &["m1.example"])).unwrap_err();
        assert!(e.contains("\"member\""), "{e}");
    }

    #[test]
    fn allowed_hostname_must_be_among_the_certificates_names() {
        let side = peer(None, Some("m1.example"));
        assert!(check_identity(&side, &cert("x", &["m0.example", "M1.example"])).is_ok());
        assert!(check_identity(&side, &cert("m1.example", &["m2.example"])).is_err());
        let by_ip = peer(None, Some("127.0.0.1"));
        assert!(check_identity(&by_ip, &cert("x", &["127.0.0.1"])).is_ok());
        assert!(check_identity(&by_ip, &cert("x", &["127.0.0.2"])).is_err());
    }
}

#[cfg(test)]
#[path = "server_reload_tests.rs"]
mod reload_tests;
