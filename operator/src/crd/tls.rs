//! `spec.tls` and `status.tls` of an `EtcdCluster`: mutual TLS on the
//! client and peer ports, with certificates the operator issues from a CA
//! of its own (`auto`) or takes from Secrets the user provides (`secretRefs`).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Leaf certificate lifetime when `auto.validity` is not set: 90 days.
pub const DEFAULT_VALIDITY: &str = "2160h";
/// How long before expiry certificates are reissued when
/// `auto.rotateBefore` is not set: 30 days.
pub const DEFAULT_ROTATE_BEFORE: &str = "720h";
/// Shortest allowed `auto.validity`: the operator looks at certificates at
/// least this often, so a shorter one could expire between two looks.
pub const MIN_VALIDITY: Duration = Duration::from_secs(10 * 60);
/// Annotation on the `EtcdCluster` asking for the certificates to be
/// reissued now (same CA): any new value triggers one rotation, recorded
/// in `status.tls.lastRotationRequest`.
pub const ROTATE_ANNOTATION: &str = "ferrocd.io/rotate-certificates";

/// Pattern of a duration as Go and Kubernetes write it, restricted to
/// hours, minutes and seconds: `2160h`, `1h30m`, `90s`.
pub(crate) const DURATION_PATTERN: &str = "^([0-9]+(h|m|s))+$";

/// Mutual TLS for clients and peers. Exactly one of `auto`, `secretRefs`
/// and `issuerRef`; TLS can be switched on for a running cluster, but not
/// off, nor between them (members would stop trusting each other
/// mid-rollout).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.auto) ? 1 : 0) + (has(self.secretRefs) ? 1 : 0) + (has(self.issuerRef) ? 1 : 0) == 1")
        .message("tls needs exactly one of auto, secretRefs and issuerRef"),
    validation = Rule::new("has(self.auto) == has(oldSelf.auto) && has(self.issuerRef) == has(oldSelf.issuerRef)")
        .message("tls: auto, secretRefs and issuerRef can not be exchanged after creation")
)]
pub struct TlsSpec {
    /// The operator runs a CA per cluster (Secret `<cluster>-ca`) and issues,
    /// and reissues before expiry, the server, peer and client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoTls>,
    /// Certificates from Secrets of type `kubernetes.io/tls` (keys `tls.crt`,
    /// `tls.key`, `ca.crt`) that the user keeps up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_refs: Option<TlsSecretRefs>,
    /// cert-manager issues the certificates: the operator keeps a
    /// `Certificate` (cert-manager.io/v1) per Secret, cert-manager writes
    /// and renews the Secrets (`tls.crt`, `tls.key`, `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager issuer, as `Certificate.spec.issuerRef` names it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer (in the cluster's namespace) or ClusterIssuer.
    pub name: String,
    /// `Issuer` (the default) or `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// API group of the issuer; cert-manager's `cert-manager.io` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Requested lifetime of the certificates, e.g. `2160h` (cert-manager's
    /// default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: Option<String>,
    /// How long before expiry cert-manager renews, e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub renew_before: Option<String>,
}

/// Settings of operator-issued certificates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoTls {
    /// Lifetime of the server, peer and client certificates, e.g. `2160h`
    /// (the default, 90 days). At least 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub validity: Option<String>,
    /// Reissue a certificate when less than this is left, e.g. `720h` (the
    /// default, 30 days). Must be shorter than `validity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub rotate_before: Option<String>,
}

/// Secrets holding user-supplied certificates, in the cluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecretRefs {
    /// Certificate members serve clients with (`--cert-file`); its `ca.crt`
    /// is the CA client certificates must come from (`--trusted-ca-file`).
    pub server: String,
    /// Certificate members use towards each other, as server and as client
    /// (`--peer-cert-file`); its `ca.crt` is the peers' CA.
    pub peer: String,
    /// Client certificate the operator connects with; `ca.crt` must verify
    /// the server certificate.
    pub operator_client: String,
    /// A client certificate for users, reported as `status.clientSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Certificates as the operator last saw them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// Every certificate Secret of the cluster with its serial and expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// Value of the `ferrocd.io/rotate-certificates` annotation that the
    /// last requested rotation honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_request: Option<String>,
    /// Value of the `ferrocd.io/rotate-ca` annotation that the last CA
    /// rotation honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ca_rotation_request: Option<String>,
    /// Phase of a CA rotation under way: `Trust` (both CAs trusted, the old
    /// one issuing) or `Reissue` (both trusted, the new one issuing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<String>,
}

/// One certificate Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Name of the Secret.
    pub secret: String,
    /// Serial number in hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// End of validity (`notAfter`).
    pub not_after: Time,
}

/// Why `spec.tls` can not be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSpecError {
    /// Not exactly one of `auto`, `secretRefs` and `issuerRef`.
    #[error("spec.tls needs exactly one of auto, secretRefs and issuerRef")]
    Mode,
    /// A duration that is not `<n>h`, `<n>m`, `<n>s` parts.
    #[error("spec.tls.auto.{field}: {value:?} is not a duration like 2160h or 1h30m")]
    Duration {
        /// `validity` or `rotateBefore`.
        field: &'static str,
        /// What was written.
        value: String,
    },
    /// `validity` under [`MIN_VALIDITY`].
    #[error("spec.tls.auto.validity must be at least 10m")]
    ValidityTooShort,
    /// `rotateBefore` not shorter than `validity`: every certificate would
    /// be due for rotation as soon as it is issued.
    #[error("spec.tls.auto.rotateBefore must be shorter than validity")]
    RotateBeforeNotBelowValidity,
}

/// The durations of an `auto` spec, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoDurations {
    /// Lifetime of a leaf certificate.
    pub validity: Duration,
    /// Reissue when less than this is left.
    pub rotate_before: Duration,
}

impl TlsSpec {
    /// Checks what the schema checks, and what it can not: the durations'
    /// values and how they relate.
    pub fn validate(&self) -> Result<(), TlsSpecError> {
        match (&self.auto, &self.secret_refs, &self.issuer_ref) {
            (Some(auto), None, None) => auto.durations().map(drop),
            (None, Some(_), None) | (None, None, Some(_)) => Ok(()),
            _ => Err(TlsSpecError::Mode),
        }
    }
}

impl AutoTls {
    /// `validity` and `rotateBefore` with their defaults, checked.
    pub fn durations(&self) -> Result<AutoDurations, TlsSpecError> {
        let field = |field: &'static str, value: &Option<String>, default: &str| {
            let value = value.as_deref().unwrap_or(default);
            parse_duration(value).ok_or_else(|| TlsSpecError::Duration {
                field,
                value: value.to_string(),
            })
        };
        let validity = field("validity", &self.validity, DEFAULT_VALIDITY)?;
        let rotate_before = field("rotateBefore", &self.rotate_before, DEFAULT_ROTATE_BEFORE)?;
        if validity < MIN_VALIDITY {
            return Err(TlsSpecError::ValidityTooShort);
        }
        if rotate_before >= validity {
            return Err(TlsSpecError::RotateBeforeNotBelowValidity);
        }
        Ok(AutoDurations {
            validity,
            rotate_before,
        })
    }
}

/// Parses `2160h`, `1h30m`, `45s`: one or more `<digits><h|m|s>` parts.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
    }
    digits.is_empty().then_some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(validity: Option<&str>, rotate_before: Option<&str>) -> AutoTls {
        AutoTls {
            validity: validity.map(Into::into),
            rotate_before: rotate_before.map(Into::into),
        }
    }

    #[test]
    fn durations_parse_in_go_spelling() {
        assert_eq!(
            parse_duration("2160h"),
            Some(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "10", "h", "5d", "1.5h", "-1h", "1h 2m"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn auto_defaults_to_ninety_days_rotated_thirty_days_early() {
        let durations = auto(None, None).durations().unwrap();
        assert_eq!(durations.validity, Duration::from_secs(90 * 86400));
        assert_eq!(durations.rotate_before, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn rotate_before_must_be_shorter_than_validity() {
        assert_eq!(
            auto(Some("1h"), Some("1h")).durations(),
            Err(TlsSpecError::RotateBeforeNotBelowValidity)
        );
        assert!(auto(Some("1h"), Some("59m")).durations().is_ok());
    }

    #[test]
    fn validity_under_ten_minutes_is_rejected() {
        assert_eq!(
            auto(Some("5m"), Some("1m")).durations(),
            Err(TlsSpecError::ValidityTooShort)
        );
    }

    #[test]
    fn bad_duration_names_its_field() {
        assert_eq!(
            auto(None, Some("30d")).durations(),
            Err(TlsSpecError::Duration {
                field: "rotateBefore",
                value: "30d".into()
            })
        );
    }

    #[test]
    fn tls_needs_exactly_one_mode() {
        let neither = TlsSpec::default();
        assert_eq!(neither.validate(), Err(TlsSpecError::Mode));
        let both = TlsSpec {
            auto: Some(AutoTls::default()),
            secret_refs: Some(TlsSecretRefs::default()),
            issuer_ref: None,
        };
        assert_eq!(both.validate(), Err(TlsSpecError::Mode));
        let with_issuer = TlsSpec {
            auto: Some(AutoTls::default()),
            issuer_ref: Some(IssuerRef::default()),
            ..Default::default()
        };
        assert_eq!(with_issuer.validate(), Err(TlsSpecError::Mode));
        let issuer_only = TlsSpec {
            issuer_ref: Some(IssuerRef::default()),
            ..Default::default()
        };
        assert_eq!(issuer_only.validate(), Ok(()));
    }
}
