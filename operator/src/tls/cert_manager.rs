//! `spec.tls.issuerRef`: cert-manager issues the certificates. The
//! operator renders one `Certificate` (cert-manager.io/v1) per certificate
//! Secret of the cluster, with the names, usages and Secret names the
//! `auto` mode would use; cert-manager writes the Secrets (`tls.crt`,
//! `tls.key`, `ca.crt`) and renews them, and members read them as they read
//! the operator's own.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{json, Value};

use super::pki::{Names, Usage};
use super::CertKind;
use crate::builders::ClusterRef;
use crate::crd::IssuerRef;

/// API group of cert-manager's resources.
pub const GROUP: &str = "cert-manager.io";
/// Version of the `Certificate` resource rendered.
pub const VERSION: &str = "v1";
/// Kind of the resource rendered.
pub const KIND: &str = "Certificate";
/// Kind of issuer when `issuerRef.kind` is not set.
pub const DEFAULT_ISSUER_KIND: &str = "Issuer";

/// cert-manager's `Certificate` as an API resource, for dynamic calls.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), "certificates")
}

/// Name of the `Certificate` behind the Secret of `kind`.
pub fn certificate_name(cluster: &ClusterRef, kind: CertKind) -> String {
    kind.secret_name(cluster)
}

/// The `Certificate` cert-manager turns into the Secret of `kind`;
/// `names` are the served names (members, client Service, localhost).
pub fn certificate(
    cluster: &ClusterRef,
    kind: CertKind,
    issuer: &IssuerRef,
    names: &Names,
) -> DynamicObject {
    let request = kind.request(cluster, names, std::time::Duration::ZERO);
    let usages: &[&str] = match request.usage {
        Usage::ServerAndClient => &[
            "digital signature",
            "key encipherment",
            "server auth",
            "client auth",
        ],
        Usage::Client => &["digital signature", "key encipherment", "client auth"],
    };
    let mut spec = json!({
        "secretName": kind.secret_name(cluster),
        "commonName": request.common_name,
        "usages": usages,
        "issuerRef": {
            "name": issuer.name,
            "kind": issuer.kind.as_deref().unwrap_or(DEFAULT_ISSUER_KIND),
            "group": issuer.group.as_deref().unwrap_or(GROUP),
        },
        // A new key with every renewal, as the operator's own rotation does,
        // in PKCS#8 as `auto` writes them.
        "privateKey": {
            "algorithm": "ECDSA",
            "size": 256,
            "encoding": "PKCS8",
            "rotationPolicy": "Always",
        },
    });
    if !request.names.dns.is_empty() {
        spec["dnsNames"] = json!(request.names.dns);
    }
    if !request.names.ips.is_empty() {
        let ips: Vec<String> = request.names.ips.iter().map(|ip| ip.to_string()).collect();
        spec["ipAddresses"] = json!(ips);
    }
    put_optional(&mut spec, "duration", issuer.duration.as_deref());
    put_optional(&mut spec, "renewBefore", issuer.renew_before.as_deref());
    let mut object = DynamicObject::new(&certificate_name(cluster, kind), &api_resource())
        .within(cluster.namespace());
    object.metadata = cluster.object_metadata(certificate_name(cluster, kind));
    object.data = json!({ "spec": spec });
    object
}

fn put_optional(spec: &mut Value, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        spec[key] = json!(value);
    }
}

#[cfg(test)]
#[path = "cert_manager/tests.rs"]
mod tests;
