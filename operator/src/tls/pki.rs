//! The cluster CA and the certificates it signs (rcgen), and what the
//! operator reads back from a certificate (x509-parser): serial, expiry,
//! subject alternative names.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;

/// Lifetime of a cluster CA; it is replaced (see `tls::ca_rotation`) when
/// less than `ca_rotation::CA_ROTATE_BEFORE` is left, or when asked.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);
/// How far back `notBefore` is set, for clocks a little behind the operator's.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why a certificate could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to make a key or certificate.
    #[error("issuing {what}: {message}")]
    Issue {
        /// What was being made.
        what: &'static str,
        /// rcgen's message.
        message: String,
    },
    /// A PEM certificate or key that does not parse.
    #[error("unreadable {0}")]
    Unreadable(&'static str),
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Served by a member and presented by it to others: members' peer
    /// certificates are both, and the server certificate doubles as the
    /// client certificate of the member's own readiness probe.
    ServerAndClient,
    /// Presented by a client only.
    Client,
}

/// A certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    /// Subject common name (with `--client-cert-auth` and auth enabled, the user).
    pub common_name: String,
    /// DNS names and IP addresses it is valid for.
    pub names: Names,
    /// Server, client or both.
    pub usage: Usage,
    /// Lifetime from now.
    pub validity: Duration,
}

/// Subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// DNS names.
    pub dns: BTreeSet<String>,
    /// IP addresses.
    pub ips: BTreeSet<IpAddr>,
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// What the operator needs to know of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number in upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// End of validity.
    pub not_after: Timestamp,
    /// Subject alternative names.
    pub names: Names,
    /// Subject key identifier (a CA's names the key certificates it signs chain to).
    pub subject_key_id: Option<Vec<u8>>,
    /// Authority key identifier: the subject key identifier of the issuing CA.
    pub authority_key_id: Option<Vec<u8>>,
}

impl CertInfo {
    /// Whether this certificate names `ca` as its issuer by key identifier:
    /// two CAs of one cluster share a subject name, never a key.
    pub fn issued_by(&self, ca: &CertInfo) -> bool {
        self.authority_key_id.is_some() && self.authority_key_id == ca.subject_key_id
    }
}

/// A cluster's certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    /// A new self-signed CA named `common_name`, valid [`CA_VALIDITY`] from `now`.
    pub fn generate(common_name: &str, now: Timestamp) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(|e| issue_error("CA key", e))?;
        let mut params = ca_params(common_name);
        params.not_before = at(now, BACKDATE, false);
        params.not_after = at(now, CA_VALIDITY, true);
        let cert = params
            .self_signed(&key)
            .map_err(|e| issue_error("CA certificate", e))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The CA kept in a Secret: its certificate and key.
    ///
    /// A certificate names its issuer by subject and key identifier, both
    /// read back here (the identifier is derived from the key as when the
    /// CA was made), so certificates issued now chain to the stored CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let (_, pem) = parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| PkiError::Unreadable("CA certificate"))?;
        let cert = pem
            .parse_x509()
            .map_err(|_| PkiError::Unreadable("CA certificate"))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(PkiError::Unreadable("CA certificate common name"))?;
        if !cert.is_ca() {
            return Err(PkiError::Unreadable("CA certificate (not a CA)"));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|_| PkiError::Unreadable("CA key"))?;
        if key.subject_public_key_info() != cert.public_key().raw {
            return Err(PkiError::Unreadable("CA key (not the certificate's)"));
        }
        Ok(Ca {
            issuer: Issuer::new(ca_params(common_name), key),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate, PEM encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM encoded.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A new key and a certificate for it, signed by this CA, valid from `now`.
    pub fn issue(&self, request: &LeafRequest, now: Timestamp) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(|e| issue_error("key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, request.common_name.as_str());
        params.subject_alt_names = request
            .names
            .dns
            .iter()
            .map(|name| {
                name.as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| issue_error("DNS name", e))
            })
            .chain(
                request
                    .names
                    .ips
                    .iter()
                    .map(|ip| Ok(SanType::IpAddress(*ip))),
            )
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match request.usage {
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.not_before = at(now, BACKDATE, false);
        params.not_after = at(now, request.validity, true);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| issue_error("certificate", e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Serial, expiry and names of the first certificate in `pem`.
pub fn inspect(pem: &str) -> Result<CertInfo, PkiError> {
    let (_, pem) =
        parse_x509_pem(pem.as_bytes()).map_err(|_| PkiError::Unreadable("certificate"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| PkiError::Unreadable("certificate"))?;
    let not_after = Timestamp::from_second(cert.validity().not_after.timestamp())
        .map_err(|_| PkiError::Unreadable("certificate notAfter"))?;
    let mut names = Names::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    names.dns.insert(dns.to_string());
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.ips.extend(ip);
                }
                _ => {}
            }
        }
    }
    let (mut subject_key_id, mut authority_key_id) = (None, None);
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
            }
            _ => {}
        }
    }
    let serial = cert
        .raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02X}"))
        .collect();
    Ok(CertInfo {
        serial,
        not_after,
        names,
        subject_key_id,
        authority_key_id,
    })
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// `now` moved by `by`, forwards or backwards, as rcgen's time type.
fn at(now: Timestamp, by: Duration, forwards: bool) -> OffsetDateTime {
    let seconds = by.as_secs() as i64;
    let moved = if forwards {
        now.as_second().saturating_add(seconds)
    } else {
        now.as_second().saturating_sub(seconds)
    };
    OffsetDateTime::from_unix_timestamp(moved).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn issue_error(what: &'static str, error: impl std::fmt::Display) -> PkiError {
    PkiError::Issue {
        what,
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests;
