//! Dialing other members over TLS (`https://` peer URLs): this member's
//! peer certificate as its client identity, the other member's certificate
//! checked against `--peer-trusted-ca-file` and the host in its URL. Read
//! again from disk when the files change, as on the serving side.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::files::{self, Reloading};
use super::{CertSource, TlsError, TlsSide};

/// This member's TLS configuration for dialing peers.
pub struct ClientTls {
    config: Reloading<ClientConfig>,
}

impl ClientTls {
    pub fn new(side: TlsSide) -> Result<Arc<Self>, TlsError> {
        let built = side.clone();
        let config = Reloading::new(side.side, side.files(), move || build(&built))?;
        Ok(Arc::new(ClientTls { config }))
    }

    /// A connector for the member at `url` (an `https://` peer URL).
    pub fn connector(self: &Arc<Self>, url: &url::Url) -> Result<PeerConnector, String> {
        let host = url.host_str().ok_or("no host in the peer URL")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
        Ok(PeerConnector {
            tls: self.clone(),
            server_name,
        })
    }
}

/// Opens TLS connections to one member, for tonic's channel.
#[derive(Clone)]
pub struct PeerConnector {
    tls: Arc<ClientTls>,
    server_name: ServerName<'static>,
}

/// How long a TCP connect plus handshake to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<tonic::codegen::http::Uri> for PeerConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let connector = TlsConnector::from(self.tls.config.get());
        let name = self.server_name.clone();
        Box::pin(async move {
            let addr = uri
                .authority()
                .map(|a| a.as_str().to_string())
                .ok_or_else(|| std::io::Error::other("peer URL without host"))?;
            let connect = async {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                connector.connect(name, tcp).await
            };
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS connect"))??;
            Ok(TokioIo::new(tls))
        })
    }
}

fn build(side: &TlsSide) -> Result<ClientConfig, TlsError> {
    let name = side.side;
    let builder = ClientConfig::builder_with_provider(side.options.provider())
        .with_protocol_versions(&side.options.versions)
        .map_err(|source| TlsError::Config { side: name, source })?;
    let builder = match &side.trusted_ca {
        Some(ca) => builder.with_root_certificates(files::roots(name, ca)?),
        // With self-signed certificates there is nothing to check them
        // against: etcd skips the check too.
        None if side.self_signed || side.cert == CertSource::Auto => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(side.options.provider()))),
        None => {
            return Err(TlsError::Verifier {
                side: name,
                what: "--peer-trusted-ca-file is needed to check the other members' certificates"
                    .into(),
            })
        }
    };
    let CertSource::Files { cert, key } = &side.cert else {
        return Err(TlsError::Auto {
            side: name,
            what: "the self-signed certificate was not made before dialing".into(),
        });
    };
    let mut config = builder
        .with_client_auth_cert(files::certs(name, cert)?, files::key(name, key)?)
        .map_err(|source| TlsError::Config { side: name, source })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts any server certificate (still checking the handshake's
/// signatures): only for `--peer-auto-tls`, whose certificates are
/// self-signed by each member.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
