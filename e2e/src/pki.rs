//! Certificates for TLS tests, made with rcgen in a temporary directory: a
//! CA, server and peer certificates for 127.0.0.1 and localhost, client
//! certificates with a chosen common name, expired and revoked ones.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate's serial number, for revocation lists.
    pub serial: u64,
}

/// What a client needs to talk TLS to a server: the CA that signed the
/// server's certificate, and its own certificate.
#[derive(Debug, Clone)]
pub struct ClientCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientCerts {
    /// etcdctl's flags for these files.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.cert.display()),
            format!("--key={}", self.key.display()),
        ]
    }
}

/// A certificate authority whose files live in a directory of its own.
pub struct Pki {
    dir: tempfile::TempDir,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
    next_serial: u64,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write CA");
        Pki {
            dir,
            name: name.to_string(),
            issuer,
            next_serial: 1000,
        }
    }

    /// The CA certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate for servers and clients alike (both key usages, as
    /// etcd's peer certificates need), valid for 127.0.0.1 and localhost,
    /// with common name `cn`, written as `<file>.pem` and `<file>-key.pem`.
    pub fn issue(&mut self, file: &str, cn: &str) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(file, cn, now - Duration::hours(1), now + Duration::days(30))
    }

    /// A certificate that expired yesterday.
    pub fn issue_expired(&mut self, file: &str, cn: &str) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(file, cn, now - Duration::days(30), now - Duration::days(1))
    }

    fn issue_valid(
        &mut self,
        file: &str,
        cn: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> CertFiles {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
            SanType::DnsName("localhost".try_into().expect("dns name")),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        self.next_serial += 1;
        let serial = self.next_serial;
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
            serial,
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A revocation list of this CA naming `revoked`, written as `file`.
    pub fn crl(&self, file: &str, revoked: &[&CertFiles]) -> PathBuf {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from(c.serial),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign CRL");
        let path = self.dir.path().join(file);
        std::fs::write(&path, crl.pem().expect("CRL pem")).expect("write CRL");
        path
    }

    /// A client's files: this CA and a new certificate with common name `cn`.
    pub fn client(&mut self, cn: &str) -> ClientCerts {
        let files = self.issue(&format!("client-{cn}"), cn);
        ClientCerts {
            ca: self.ca(),
            cert: files.cert,
            key: files.key,
        }
    }

    /// The CA's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
