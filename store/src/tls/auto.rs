//! `--auto-tls` and `--peer-auto-tls`: a self-signed certificate for the
//! listener's hosts, made at the first start in
//! `<data-dir>/fixtures/{client,peer}` and reused afterwards, as etcd does.

use std::path::Path;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

use super::{CertSource, TlsError, TlsSide};

/// Resolves an `Auto` certificate source of `side` into the files of a
/// self-signed certificate for `hosts`, making them when they do not exist.
pub fn resolve(
    mut side: TlsSide,
    data_dir: &Path,
    hosts: &[String],
    validity_years: u32,
) -> Result<TlsSide, TlsError> {
    if side.cert != CertSource::Auto {
        return Ok(side);
    }
    let err = |what: String| TlsError::Auto {
        side: side.side,
        what,
    };
    let dir = data_dir.join("fixtures").join(side.side);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !(cert.exists() && key.exists()) {
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let (cert_pem, key_pem) = make(hosts, validity_years).map_err(|e| err(e.to_string()))?;
        write_private(&key, key_pem.as_bytes())
            .map_err(|e| err(format!("{}: {e}", key.display())))?;
        std::fs::write(&cert, cert_pem).map_err(|e| err(format!("{}: {e}", cert.display())))?;
    }
    side.cert = CertSource::Files { cert, key };
    side.self_signed = true;
    Ok(side)
}

fn make(hosts: &[String], validity_years: u32) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ferrocd");
    for host in hosts {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_string().try_into()?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * i64::from(validity_years.max(1)));
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsOptions;

    fn auto_side() -> TlsSide {
        TlsSide {
            side: "client",
            cert: CertSource::Auto,
            trusted_ca: None,
            client_cert_auth: false,
            crl: None,
            allowed_cn: None,
            allowed_hostname: None,
            self_signed: false,
            options: TlsOptions::default(),
        }
    }

    #[test]
    fn makes_a_certificate_once_for_the_listeners_hosts_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let side = resolve(auto_side(), dir.path(), &hosts, 1).unwrap();
        let CertSource::Files { cert, key } = &side.cert else {
            panic!("not resolved: {:?}", side.cert);
        };
        assert_eq!(cert, &dir.path().join("fixtures/client/cert.pem"));
        let pem = std::fs::read(cert).unwrap();
        let der = crate::tls::files::certs("client", cert).unwrap().remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 2);
        crate::tls::files::key("client", key).unwrap();

        let again = resolve(auto_side(), dir.path(), &hosts, 1).unwrap();
        assert_eq!(again.cert, side.cert);
        assert_eq!(std::fs::read(cert).unwrap(), pem, "kept across restarts");
    }
}
