//! Transport security for the client and peer listeners, with etcd's flags
//! and behaviour: certificates and keys from PEM files (or made at start
//! with `--auto-tls`), client certificates checked against a trusted CA and
//! CRL, and every file read again when it changes on disk, so a rotated
//! certificate is served to new connections without a restart.
//!
//! [`flags`] validates the command line, [`files`] watches the files,
//! [`server`] accepts TLS connections, [`client`] dials peers over TLS,
//! [`auto`] makes self-signed certificates.

pub mod auto;
pub mod client;
pub mod files;
pub mod flags;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

pub use flags::TlsFlags;

/// Where a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// `--cert-file` and `--key-file` (or their `--peer-` forms).
    Files { cert: PathBuf, key: PathBuf },
    /// `--auto-tls` / `--peer-auto-tls`: a self-signed certificate made at
    /// start in the data directory.
    Auto,
}

/// The TLS settings of one side (client or peer), as etcd's `TLSInfo`.
#[derive(Debug, Clone)]
pub struct TlsSide {
    /// Which side, for messages: "client" or "peer".
    pub side: &'static str,
    pub cert: CertSource,
    /// CA bundle that client certificates (and, for peers, the other
    /// members' server certificates) must chain to.
    pub trusted_ca: Option<PathBuf>,
    /// Require and verify client certificates.
    pub client_cert_auth: bool,
    /// Certificates revoked by serial number.
    pub crl: Option<PathBuf>,
    /// Peer only: the common name a connecting member's certificate must have.
    pub allowed_cn: Option<String>,
    /// Peer only: a name a connecting member's certificate must be valid for.
    pub allowed_hostname: Option<String>,
    /// The certificate was made by `--auto-tls`/`--peer-auto-tls`: the
    /// other members' self-signed ones cannot be checked against a CA.
    pub self_signed: bool,
    pub options: TlsOptions,
}

impl TlsSide {
    /// Whether connecting parties must present a certificate: etcd asks for
    /// one as soon as a trusted CA is given, not only with
    /// `--client-cert-auth`.
    pub fn requires_client_cert(&self) -> bool {
        self.client_cert_auth || self.trusted_ca.is_some()
    }

    /// The files this side reads, to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let CertSource::Files { cert, key } = &self.cert {
            files.push(cert.clone());
            files.push(key.clone());
        }
        files.extend(self.trusted_ca.iter().cloned());
        files.extend(self.crl.iter().cloned());
        files
    }
}

/// Cipher suites and protocol versions, shared by both sides as in etcd.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub cipher_suites: Vec<SupportedCipherSuite>,
    pub versions: Vec<&'static SupportedProtocolVersion>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            cipher_suites: rustls::crypto::ring::default_provider().cipher_suites,
            versions: rustls::ALL_VERSIONS.to_vec(),
        }
    }
}

impl TlsOptions {
    /// The crypto provider restricted to the chosen cipher suites.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        Arc::new(CryptoProvider {
            cipher_suites: self.cipher_suites.clone(),
            ..rustls::crypto::ring::default_provider()
        })
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{side} TLS: reading {path}: {source}")]
    Read {
        side: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{side} TLS: {path}: {what}")]
    Pem {
        side: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("{side} TLS: {source}")]
    Config {
        side: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("{side} TLS: client certificate verifier: {what}")]
    Verifier { side: &'static str, what: String },
    #[error("{side} TLS: making a self-signed certificate: {what}")]
    Auto { side: &'static str, what: String },
}

/// Reads every certificate, key, CA and CRL file the flags name and builds
/// the configurations from them, so that a missing file, a key that does
/// not match its certificate or a malformed PEM stops the start with a
/// clear message (self-signed certificates are made later, in the data
/// directory).
pub fn preflight(settings: &flags::TlsSettings) -> Result<(), TlsError> {
    for side in settings.client.iter().chain(settings.peer.iter()) {
        if side.cert != CertSource::Auto {
            server::ServerTls::new(side.clone(), &[])?;
        }
    }
    if let Some(peer) = &settings.peer {
        if peer.cert != CertSource::Auto {
            client::ClientTls::new(peer.clone())?;
        }
    }
    Ok(())
}

/// Installs ring as rustls' process-wide provider (once; later calls are
/// no-ops), for the code paths that use rustls' defaults.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
