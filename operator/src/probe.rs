//! `ferrocd-operator probe`: the readiness probe of TLS members, run by the
//! kubelet inside the member's container, and the chart's `helm test`. An
//! HTTPS GET with a client certificate from a mounted `kubernetes.io/tls`
//! Secret directory (`ca.crt`, `tls.crt`, `tls.key`), or a plain HTTP GET;
//! success is a 200 answer.
//!
//! The kubelet's own HTTPS probes present no client certificate, so a
//! member with `--client-cert-auth` refuses them at the handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tls::{CA_CRT, TLS_CRT, TLS_KEY};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `http(s)://host:port/path`.
    #[error("bad probe URL {0:?}: expected https://host:port/path or http://host:port/path")]
    Url(String),
    /// An `https://` URL without a certificate directory.
    #[error("{0} needs --tls-dir (ca.crt, tls.crt, tls.key)")]
    NoCertificates(String),
    /// A certificate file is missing or not PEM.
    #[error("reading {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The TLS configuration could not be built from the files.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// Connecting, the handshake, or the exchange failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with another status than 200.
    #[error("answered {status_line:?}: {body}")]
    NotOk {
        /// The HTTP status line.
        status_line: String,
        /// The body, for the probe's message.
        body: String,
    },
}

/// GETs `url`: an `https://` one presenting the certificate in `tls_dir`
/// and trusting its `ca.crt`, an `http://` one in plain text. Returns the
/// body of a 200 answer.
pub async fn probe(
    url: &str,
    tls_dir: Option<&Path>,
    timeout: Duration,
) -> Result<String, ProbeError> {
    tokio::time::timeout(timeout, get(url, tls_dir))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn get(url: &str, tls_dir: Option<&Path>) -> Result<String, ProbeError> {
    let (tls, host, port, path) = split_url(url).ok_or_else(|| ProbeError::Url(url.to_string()))?;
    if !tls {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        return exchange(tcp, host, path).await;
    }
    let tls_dir = tls_dir.ok_or_else(|| ProbeError::NoCertificates(url.to_string()))?;
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|_| ProbeError::Url(url.to_string()))?;
    let config = Arc::new(client_config(tls_dir)?);
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await?;
    exchange(stream, host, path).await
}

/// One `GET path` on `stream`; the body of a 200 answer.
async fn exchange<S>(mut stream: S, host: &str, path: &str) -> Result<String, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // A server may close without close_notify after `Connection: close`;
    // what was read by then is the answer.
    if let Err(error) = stream.read_to_end(&mut response).await {
        if response.is_empty() {
            return Err(error.into());
        }
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status_line = head.lines().next().unwrap_or_default().to_string();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(body.to_string())
    } else {
        Err(ProbeError::NotOk {
            status_line,
            body: body.trim().to_string(),
        })
    }
}

/// `http(s)://host:port/path` into whether it is TLS, host, port and path.
fn split_url(url: &str) -> Option<(bool, &str, u16, &str)> {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("http://")?),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':')?;
    Some((tls, host, port.parse().ok()?, path))
}

fn client_config(tls_dir: &Path) -> Result<rustls::ClientConfig, ProbeError> {
    let read = |name: &str| {
        let path = tls_dir.join(name);
        std::fs::read(&path).map_err(|e| ProbeError::File {
            path,
            message: e.to_string(),
        })
    };
    let bad_pem = |name: &str, e: rustls::pki_types::pem::Error| ProbeError::File {
        path: tls_dir.join(name),
        message: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read(CA_CRT)?) {
        roots
            .add(ca.map_err(|e| bad_pem(CA_CRT, e))?)
            .map_err(ProbeError::Config)?;
    }
    let chain = CertificateDer::pem_slice_iter(&read(TLS_CRT)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(TLS_CRT, e))?;
    let key = PrivateKeyDer::from_pem_slice(&read(TLS_KEY)?).map_err(|e| bad_pem(TLS_KEY, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ProbeError::Config)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(ProbeError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_splits_into_host_port_and_path() {
        assert_eq!(
            split_url("https://127.0.0.1:2379/readyz"),
            Some((true, "127.0.0.1", 2379, "/readyz"))
        );
        assert_eq!(
            split_url("https://localhost:2379"),
            Some((true, "localhost", 2379, "/"))
        );
        assert_eq!(
            split_url("http://demo.prod.svc:8080/readyz"),
            Some((false, "demo.prod.svc", 8080, "/readyz"))
        );
        assert_eq!(split_url("ftp://127.0.0.1:2379/readyz"), None);
        assert_eq!(split_url("https://127.0.0.1/readyz"), None);
    }

    #[tokio::test]
    async fn missing_certificate_directory_names_the_file() {
        let error = probe(
            "https://127.0.0.1:1/readyz",
            Some(Path::new("/nonexistent-ferrocd-tls")),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&error, ProbeError::File { path, .. } if path.ends_with(CA_CRT)),
            "{error}"
        );
    }

    #[tokio::test]
    async fn https_needs_certificates_and_http_gets_a_plain_answer() {
        let error = probe("https://127.0.0.1:1/readyz", None, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(error, ProbeError::NoCertificates(_)), "{error}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for answer in ["200 OK", "503 Service Unavailable"] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 1024];
                let n = conn.read(&mut request).await.unwrap();
                assert!(request[..n].starts_with(b"GET /readyz HTTP/1.1\r\n"));
                let reply = format!("HTTP/1.1 {answer}\r\nContent-Length: 2\r\n\r\nok");
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/readyz");
        let timeout = Duration::from_secs(5);
        assert_eq!(probe(&url, None, timeout).await.unwrap(), "ok");
        let error = probe(&url, None, timeout).await.unwrap_err();
        assert!(
            matches!(&error, ProbeError::NotOk { status_line, .. } if status_line.contains("503")),
            "{error}"
        );
        server.await.unwrap();
    }
}
