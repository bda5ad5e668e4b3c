//! `ferrocd-operator probe`: the readiness probe of TLS members, run by the
//! kubelet inside the member's container. An HTTPS GET with a client
//! certificate from a mounted `kubernetes.io/tls` Secret directory
//! (`ca.crt`, `tls.crt`, `tls.key`); success is a 200 answer.
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
    /// The URL is not `https://host:port/path`.
    #[error("bad probe URL {0:?}: expected https://host:port/path")]
    Url(String),
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

/// GETs `url` presenting the certificate in `tls_dir`, trusting its `ca.crt`.
/// Returns the body of a 200 answer.
pub async fn probe(url: &str, tls_dir: &Path, timeout: Duration) -> Result<String, ProbeError> {
    tokio::time::timeout(timeout, get(url, tls_dir))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn get(url: &str, tls_dir: &Path) -> Result<String, ProbeError> {
    let (host, port, path) = split_url(url).ok_or_else(|| ProbeError::Url(url.to_string()))?;
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|_| ProbeError::Url(url.to_string()))?;
    let config = Arc::new(client_config(tls_dir)?);
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await?;
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

/// `https://host:port/path` into its parts.
fn split_url(url: &str) -> Option<(&str, u16, &str)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':')?;
    Some((host, port.parse().ok()?, path))
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
            Some(("127.0.0.1", 2379, "/readyz"))
        );
        assert_eq!(
            split_url("https://localhost:2379"),
            Some(("localhost", 2379, "/"))
        );
        assert_eq!(split_url("http://127.0.0.1:2379/readyz"), None);
        assert_eq!(split_url("https://127.0.0.1/readyz"), None);
    }

    #[tokio::test]
    async fn missing_certificate_directory_names_the_file() {
        let error = probe(
            "https://127.0.0.1:1/readyz",
            Path::new("/nonexistent-ferrocd-tls"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&error, ProbeError::File { path, .. } if path.ends_with(CA_CRT)),
            "{error}"
        );
    }
}
