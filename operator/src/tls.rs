//! The certificates of a TLS cluster, as pure functions: which Secrets
//! hold them, which names they must carry, when one is reissued, and the
//! Secrets rendered for apply. [`pki`] makes and reads the certificates;
//! the reconciler (`controller::certificates`) does the I/O.

pub mod ca_rotation;
pub mod cert_manager;
pub mod enable;
pub mod pki;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;

use crate::builders::ClusterRef;
use crate::crd::{TlsSpec, MAX_REPLICAS};
use pki::{CertInfo, LeafRequest, Names, Usage};

/// Secret key of the certificate (`kubernetes.io/tls`).
pub const TLS_CRT: &str = "tls.crt";
/// Secret key of the private key (`kubernetes.io/tls`).
pub const TLS_KEY: &str = "tls.key";
/// Secret key of the CA certificate.
pub const CA_CRT: &str = "ca.crt";
/// Type of every certificate Secret.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// Common name of the operator's client certificate: with `--client-cert-auth`
/// the certificate's CN is the etcd user, and membership changes need `root`
/// once auth is enabled.
pub const OPERATOR_COMMON_NAME: &str = "root";
/// The DNS domain of the Kubernetes cluster, for the `.svc.cluster.local` names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// One of the leaf certificates of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertKind {
    /// Served on the client port.
    Server,
    /// Served and presented on the peer port.
    Peer,
    /// Presented by the operator.
    OperatorClient,
    /// For users and kube-apiserver: `status.clientSecret`.
    Client,
}

impl CertKind {
    /// Every kind, in the order they are issued.
    pub const ALL: [CertKind; 4] = [
        CertKind::Server,
        CertKind::Peer,
        CertKind::OperatorClient,
        CertKind::Client,
    ];

    /// Name of the Secret the operator keeps this certificate in (`auto`).
    pub fn secret_name(self, cluster: &ClusterRef) -> String {
        let suffix = match self {
            CertKind::Server => "server-tls",
            CertKind::Peer => "peer-tls",
            CertKind::OperatorClient => "operator-client-tls",
            CertKind::Client => "client-tls",
        };
        format!("{}-{suffix}", cluster.name())
    }

    /// What to issue for this kind, valid for `names` (members' and Service names).
    pub fn request(self, cluster: &ClusterRef, names: &Names, validity: Duration) -> LeafRequest {
        let (common_name, names, usage) = match self {
            CertKind::Server | CertKind::Peer => (
                cluster.name().to_string(),
                names.clone(),
                Usage::ServerAndClient,
            ),
            CertKind::OperatorClient => (
                OPERATOR_COMMON_NAME.to_string(),
                Names::default(),
                Usage::Client,
            ),
            CertKind::Client => (
                format!("{}-client", cluster.name()),
                Names::default(),
                Usage::Client,
            ),
        };
        LeafRequest {
            common_name,
            names,
            usage,
            validity,
        }
    }

    /// Whether the certificate is served, so its names must be the current ones.
    fn is_served(self) -> bool {
        matches!(self, CertKind::Server | CertKind::Peer)
    }
}

/// Name of the Secret holding an `auto` cluster's CA certificate and key.
pub fn ca_secret_name(cluster: &ClusterRef) -> String {
    format!("{}-ca", cluster.name())
}

/// Common name of an `auto` cluster's CA.
pub fn ca_common_name(cluster: &ClusterRef) -> String {
    format!("ferrocd CA {}/{}", cluster.namespace(), cluster.name())
}

/// The Secrets a TLS cluster's pods and the operator use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretNames {
    /// Mounted by members for the client port.
    pub server: String,
    /// Mounted by members for the peer port.
    pub peer: String,
    /// Read by the operator to connect.
    pub operator_client: String,
    /// Reported as `status.clientSecret`.
    pub client: Option<String>,
}

/// The Secrets of `spec`: the operator's own names with `auto`, the
/// user's with `secretRefs`.
pub fn secret_names(cluster: &ClusterRef, spec: &TlsSpec) -> SecretNames {
    match &spec.secret_refs {
        Some(refs) => SecretNames {
            server: refs.server.clone(),
            peer: refs.peer.clone(),
            operator_client: refs.operator_client.clone(),
            client: refs.client.clone(),
        },
        None => SecretNames {
            server: CertKind::Server.secret_name(cluster),
            peer: CertKind::Peer.secret_name(cluster),
            operator_client: CertKind::OperatorClient.secret_name(cluster),
            client: Some(CertKind::Client.secret_name(cluster)),
        },
    }
}

/// The names served certificates carry: every member a cluster can have
/// (so scaling never needs a new certificate) under its headless Service,
/// in the `.svc`, `.svc.cluster.local`, namespace and bare short forms; the
/// client Service in the same forms and by its ClusterIP once known; and
/// localhost, for the readiness probe and port-forwards.
pub fn served_names(cluster: &ClusterRef, client_service_ip: Option<IpAddr>) -> Names {
    let namespace = cluster.namespace();
    let peer_service = cluster.peer_service_name();
    let forms = |host: String| {
        [
            host.clone(),
            format!("{host}.{namespace}"),
            format!("{host}.{namespace}.svc"),
            format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}"),
        ]
    };
    let mut names = Names::default();
    for ordinal in 0..MAX_REPLICAS {
        names.dns.extend(forms(format!(
            "{}.{peer_service}",
            cluster.member_name(ordinal)
        )));
    }
    names.dns.extend(forms(cluster.name().to_string()));
    names.dns.insert("localhost".to_string());
    names.ips.insert(IpAddr::from([127, 0, 0, 1]));
    names.ips.extend(client_service_ip);
    names
}

/// The PEM contents of a certificate Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct CertSecret {
    /// `ca.crt`.
    pub ca_pem: String,
    /// `tls.crt`.
    pub cert_pem: String,
    /// `tls.key`.
    pub key_pem: String,
}

impl std::fmt::Debug for CertSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSecret").finish_non_exhaustive()
    }
}

impl CertSecret {
    /// The three keys of `secret`; `None` when one is missing or not text.
    pub fn read(secret: &Secret) -> Option<CertSecret> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        Some(CertSecret {
            ca_pem: text(CA_CRT)?,
            cert_pem: text(TLS_CRT)?,
            key_pem: text(TLS_KEY)?,
        })
    }
}

/// Why a certificate is issued anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reissue {
    /// No Secret, or one without the three keys.
    Missing,
    /// The certificate does not parse.
    Unreadable,
    /// Signed for another CA than the cluster's (the CA Secret was replaced).
    OtherCa,
    /// A served certificate whose names are not the current ones.
    NamesChanged,
    /// Less than `rotateBefore` left.
    Expiring,
    /// The rotate annotation asked for it.
    Requested,
    /// The certificate stands, the trust bundle (`ca.crt`) changed: only
    /// `ca.crt` is rewritten.
    TrustChanged,
}

/// Whether, and why, the certificate of `kind` in `existing` is reissued.
/// `bundle` is the trust bundle the cluster's Secrets carry as `ca.crt`,
/// the issuing CA first (a CA rotation adds the other CA after it).
pub fn reissue(
    kind: CertKind,
    existing: Option<&CertSecret>,
    bundle: &str,
    names: &Names,
    due: &Due,
) -> Option<Reissue> {
    let Some(existing) = existing else {
        return Some(Reissue::Missing);
    };
    let Ok(info) = pki::inspect(&existing.cert_pem) else {
        return Some(Reissue::Unreadable);
    };
    let issuer = pki::inspect(bundle).ok();
    if !issuer.is_some_and(|issuer| info.issued_by(&issuer)) {
        return Some(Reissue::OtherCa);
    }
    if kind.is_served() && &info.names != names {
        return Some(Reissue::NamesChanged);
    }
    if due.rotation_at(&info) <= due.now {
        return Some(Reissue::Expiring);
    }
    if due.requested {
        return Some(Reissue::Requested);
    }
    (existing.ca_pem.trim() != bundle.trim()).then_some(Reissue::TrustChanged)
}

/// When certificates are due: the time now, the rotate-before window and
/// whether a rotation was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The time of the decision.
    pub now: Timestamp,
    /// `rotateBefore`.
    pub rotate_before: Duration,
    /// A new value of the rotate annotation.
    pub requested: bool,
}

impl Due {
    /// When the certificate described by `info` is to be reissued.
    pub fn rotation_at(&self, info: &CertInfo) -> Timestamp {
        let seconds = info.not_after.as_second() - self.rotate_before.as_secs() as i64;
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// Annotation on a certificate Secret: the value of the cluster's
/// `ferrocd.io/rotate-certificates` annotation when its certificate was
/// issued. A rotation request is honoured once per Secret by comparing
/// with it, read fresh from the API server: a reconcile that runs before
/// the status recording the request reaches the operator's cache must
/// not issue again.
pub const ROTATION_HONOURED_ANNOTATION: &str = "ferrocd.io/rotation-request";

/// The rotation request a certificate Secret was issued for, if any.
pub fn honoured_request(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(ROTATION_HONOURED_ANNOTATION)
        .map(String::as_str)
}

/// A `kubernetes.io/tls` Secret named `name`, owned by the cluster,
/// recording the rotation request `honoured` (see
/// [`ROTATION_HONOURED_ANNOTATION`]).
pub fn secret(
    cluster: &ClusterRef,
    name: String,
    contents: &CertSecret,
    honoured: Option<&str>,
) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut metadata = cluster.object_metadata(name);
    if let Some(request) = honoured {
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                ROTATION_HONOURED_ANNOTATION.to_string(),
                request.to_string(),
            );
    }
    Secret {
        metadata,
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([
            (CA_CRT.to_string(), bytes(&contents.ca_pem)),
            (TLS_CRT.to_string(), bytes(&contents.cert_pem)),
            (TLS_KEY.to_string(), bytes(&contents.key_pem)),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
