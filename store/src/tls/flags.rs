//! etcd's TLS flags, and their validation into the settings of each side.

use std::path::PathBuf;

use clap::Args;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use super::{CertSource, TlsOptions, TlsSide};

/// The TLS flags, named and defaulted as etcd's; each also readable from
/// `ETCD_<FLAG>`.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsFlags {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub auto_tls: bool,

    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Peer TLS using self-generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_auto_tls: bool,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,

    /// The validity period of the self-signed certificates, in years.
    #[arg(long, env = "ETCD_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1)]
    pub self_signed_cert_validity: u32,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers.
    #[arg(long, env = "ETCD_CIPHER_SUITES")]
    pub cipher_suites: Option<String>,
    /// Minimum TLS version supported: TLS1.2 or TLS1.3.
    #[arg(long, env = "ETCD_TLS_MIN_VERSION")]
    pub tls_min_version: Option<String>,
    /// Maximum TLS version supported: TLS1.2 or TLS1.3.
    #[arg(long, env = "ETCD_TLS_MAX_VERSION")]
    pub tls_max_version: Option<String>,
}

/// The validated TLS settings of both sides; `None` where a side has no
/// certificate (its `https://` URLs are then refused).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub client: Option<TlsSide>,
    pub peer: Option<TlsSide>,
    /// Flags given that have no effect, to log at start (etcd warns too).
    pub notes: Vec<String>,
}

impl TlsFlags {
    /// Validates the flags; the error is the message printed at start.
    pub fn settings(&self) -> Result<TlsSettings, String> {
        let options = TlsOptions {
            cipher_suites: cipher_suites(self.cipher_suites.as_deref())?,
            versions: versions(
                self.tls_min_version.as_deref(),
                self.tls_max_version.as_deref(),
            )?,
        };
        if self.cipher_suites.is_some() && options.versions == [&rustls::version::TLS13] {
            return Err("cipher suites cannot be configured when only TLS1.3 is enabled".into());
        }
        let mut notes = Vec::new();
        let client = side(
            "client",
            SideFlags {
                cert: &self.cert_file,
                key: &self.key_file,
                auto: self.auto_tls,
                trusted_ca: &self.trusted_ca_file,
                client_cert_auth: self.client_cert_auth,
                crl: &self.client_crl_file,
            },
            &options,
            &mut notes,
        )?;
        let peer = side(
            "peer",
            SideFlags {
                cert: &self.peer_cert_file,
                key: &self.peer_key_file,
                auto: self.peer_auto_tls,
                trusted_ca: &self.peer_trusted_ca_file,
                client_cert_auth: self.peer_client_cert_auth,
                crl: &self.peer_crl_file,
            },
            &options,
            &mut notes,
        )?
        .map(|mut p| {
            p.allowed_cn = self.peer_cert_allowed_cn.clone();
            p.allowed_hostname = self.peer_cert_allowed_hostname.clone();
            p
        });
        if peer.is_none()
            && (self.peer_cert_allowed_cn.is_some() || self.peer_cert_allowed_hostname.is_some())
        {
            notes.push(
                "--peer-cert-allowed-cn/--peer-cert-allowed-hostname have no effect without peer TLS"
                    .into(),
            );
        }
        Ok(TlsSettings {
            client,
            peer,
            notes,
        })
    }
}

struct SideFlags<'a> {
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
    auto: bool,
    trusted_ca: &'a Option<PathBuf>,
    client_cert_auth: bool,
    crl: &'a Option<PathBuf>,
}

fn side(
    name: &'static str,
    f: SideFlags<'_>,
    options: &TlsOptions,
    notes: &mut Vec<String>,
) -> Result<Option<TlsSide>, String> {
    let prefix = if name == "peer" { "peer-" } else { "" };
    let cert = match (f.cert, f.key) {
        (Some(cert), Some(key)) => {
            if f.auto {
                notes.push(format!(
                    "--{prefix}auto-tls is ignored: --{prefix}cert-file and --{prefix}key-file are given"
                ));
            }
            CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }
        }
        (None, None) if f.auto => CertSource::Auto,
        (None, None) => {
            for (flag, set) in [
                ("trusted-ca-file", f.trusted_ca.is_some()),
                ("client-cert-auth", f.client_cert_auth),
                ("crl-file", f.crl.is_some()),
            ] {
                if set {
                    let flag = if name == "client" && flag == "crl-file" {
                        "client-crl-file"
                    } else {
                        flag
                    };
                    notes.push(format!(
                        "--{prefix}{flag} has no effect without --{prefix}cert-file and --{prefix}key-file"
                    ));
                }
            }
            return Ok(None);
        }
        (cert, key) => {
            return Err(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}] (--{prefix}key-file, --{prefix}cert-file)",
                key.as_ref().map_or(String::new(), |p| p.display().to_string()),
                cert.as_ref().map_or(String::new(), |p| p.display().to_string()),
            ))
        }
    };
    if f.client_cert_auth && f.trusted_ca.is_none() {
        return Err(format!(
            "--{prefix}client-cert-auth needs --{prefix}trusted-ca-file to check certificates against"
        ));
    }
    Ok(Some(TlsSide {
        side: name,
        cert,
        trusted_ca: f.trusted_ca.clone(),
        client_cert_auth: f.client_cert_auth,
        crl: f.crl.clone(),
        allowed_cn: None,
        allowed_hostname: None,
        self_signed: false,
        options: options.clone(),
    }))
}

/// Go's names of the cipher suites rustls offers. Go's others (CBC, RSA
/// key exchange, 3DES, RC4) have no forward secrecy or are broken; rustls
/// does not implement them.
fn cipher_suite(name: &str) -> Option<SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    tls12_suite(name).or(match name {
        "TLS_AES_128_GCM_SHA256" => Some(cs::TLS13_AES_128_GCM_SHA256),
        "TLS_AES_256_GCM_SHA384" => Some(cs::TLS13_AES_256_GCM_SHA384),
        "TLS_CHACHA20_POLY1305_SHA256" => Some(cs::TLS13_CHACHA20_POLY1305_SHA256),
        _ => None,
    })
}

fn tls12_suite(name: &str) -> Option<SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// `--cipher-suites`: the TLS 1.2 suites named, plus every TLS 1.3 suite
/// (as in Go, whose list configures TLS 1.2 only).
fn cipher_suites(list: Option<&str>) -> Result<Vec<SupportedCipherSuite>, String> {
    let all = rustls::crypto::ring::default_provider().cipher_suites;
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok(all);
    };
    let mut chosen: Vec<SupportedCipherSuite> = all
        .iter()
        .copied()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        .collect();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match cipher_suite(name) {
            Some(s) if !chosen.contains(&s) => chosen.push(s),
            Some(_) => {}
            None => {
                return Err(format!(
                    "--cipher-suites: unexpected TLS cipher suite {name:?} (ferrocd supports the ECDHE suites with AES-GCM or ChaCha20-Poly1305)"
                ))
            }
        }
    }
    Ok(chosen)
}

fn version(flag: &str, v: &str) -> Result<&'static SupportedProtocolVersion, String> {
    match v {
        "TLS1.2" => Ok(&rustls::version::TLS12),
        "TLS1.3" => Ok(&rustls::version::TLS13),
        "TLS1.0" | "TLS1.1" => Err(format!(
            "--{flag}: {v} is not supported by ferrocd (TLS1.2 and TLS1.3 are)"
        )),
        other => Err(format!(
            "--{flag}: unexpected TLS version {other:?} (only TLS1.2 and TLS1.3 are supported)"
        )),
    }
}

/// `--tls-min-version` / `--tls-max-version`.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let rank = |v: &SupportedProtocolVersion| u16::from(v.version);
    let min = min
        .filter(|v| !v.is_empty())
        .map(|v| version("tls-min-version", v))
        .transpose()?;
    let max = max
        .filter(|v| !v.is_empty())
        .map(|v| version("tls-max-version", v))
        .transpose()?;
    if let (Some(lo), Some(hi)) = (min, max) {
        if rank(lo) > rank(hi) {
            return Err(format!(
                "min version ({:?}) is greater than max version ({:?})",
                lo.version, hi.version
            ));
        }
    }
    Ok(rustls::ALL_VERSIONS
        .iter()
        .copied()
        .filter(|v| min.is_none_or(|lo| rank(v) >= rank(lo)))
        .filter(|v| max.is_none_or(|hi| rank(v) <= rank(hi)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_certificate_means_no_tls_and_a_lone_half_is_an_error() {
        let s = TlsFlags::default().settings().unwrap();
        assert!(s.client.is_none() && s.peer.is_none());
        let half = TlsFlags {
            cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        let e = half.settings().unwrap_err();
        assert!(
            e.starts_with("KeyFile and CertFile must both be present"),
            "{e}"
        );
    }

    #[test]
    fn a_trusted_ca_alone_asks_for_client_certificates_as_etcd_does() {
        let f = TlsFlags {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            trusted_ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        let client = f.settings().unwrap().client.unwrap();
        assert!(client.requires_client_cert());
        let auth_without_ca = TlsFlags {
            trusted_ca_file: None,
            client_cert_auth: true,
            ..f
        };
        assert!(auth_without_ca.settings().is_err());
    }

    #[test]
    fn auto_tls_yields_to_given_files() {
        let f = TlsFlags {
            peer_auto_tls: true,
            ..Default::default()
        };
        assert_eq!(f.settings().unwrap().peer.unwrap().cert, CertSource::Auto);
        let f = TlsFlags {
            peer_cert_file: Some("c.pem".into()),
            peer_key_file: Some("k.pem".into()),
            ..f
        };
        let s = f.settings().unwrap();
        assert!(matches!(s.peer.unwrap().cert, CertSource::Files { .. }));
        assert_eq!(s.notes.len(), 1);
    }

    #[test]
    fn cipher_suites_take_go_names_and_refuse_others() {
        let chosen = cipher_suites(Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")).unwrap();
        let tls12: Vec<_> = chosen
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .collect();
        assert_eq!(tls12.len(), 1);
        assert!(chosen.len() > 1, "TLS 1.3 suites stay on");
        let e = cipher_suites(Some("TLS_RSA_WITH_AES_128_CBC_SHA")).unwrap_err();
        assert!(e.contains("unexpected TLS cipher suite"), "{e}");
    }

    #[test]
    fn tls_versions_are_bounded_and_checked() {
        assert_eq!(versions(None, None).unwrap().len(), 2);
        assert_eq!(
            versions(Some("TLS1.3"), None).unwrap(),
            vec![&rustls::version::TLS13]
        );
        assert!(versions(Some("TLS1.3"), Some("TLS1.2")).is_err());
        assert!(versions(Some("TLS1.1"), None)
            .unwrap_err()
            .contains("not supported"));
        let f = TlsFlags {
            tls_min_version: Some("TLS1.3".into()),
            cipher_suites: Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()),
            ..Default::default()
        };
        assert!(f.settings().unwrap_err().contains("only TLS1.3"));
    }
}
