//! The certificate step of a reconcile, for clusters with `spec.tls`: with
//! `auto`, make the CA once and (re)issue the leaf certificates that are
//! missing, signed for another CA, carry stale names, are inside the
//! rotate-before window, or were asked to rotate; with `secretRefs`, read
//! the user's Secrets. Either way, report serials and expiry for the status.
//!
//! The decisions are [`crate::tls`]'s pure functions; this module reads and
//! writes the Secrets, and nudges member pods after a rotation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::{server_side_apply, Context, Error};
use crate::builders::ClusterRef;
use crate::builders::FIELD_MANAGER;
use crate::crd::{
    AutoTls, CertificateStatus, EtcdCluster, EtcdClusterStatus, IssuerRef, TlsSecretRefs, TlsSpec,
    TlsSpecError, TlsStatus, ROTATE_ANNOTATION,
};
use crate::status;
use crate::tls::ca_rotation::{self, CaPhase};
use crate::tls::cert_manager;
use crate::tls::pki::{self, Ca};
use crate::tls::{self, CertKind, CertSecret, Due, Reissue};

/// Annotation put on member pods after their certificates were reissued:
/// a pod update makes the kubelet refresh the pod's Secret volumes now
/// rather than at its next periodic sync (up to a minute or more later).
pub const CERTIFICATES_ANNOTATION: &str = "ferrocd.io/certificate-serials";

/// Annotation put on member pods, with a new value every
/// [`ca_rotation::REFRESH_EVERY`], while members lag behind a CA rotation
/// phase: each change makes the kubelet refresh the Secret volumes again.
pub const REFRESH_ANNOTATION: &str = "ferrocd.io/certificate-refresh";

mod ca;
mod trust_check;

use ca::{advance_ca_rotation, begin_ca_rotation, load_or_create_ca};

/// Reason of a CA rotation whose members did not catch up in time.
pub const STALLED: &str = "RotationStalled";

/// What went wrong with the certificates, for the `CertificatesReady` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
}

/// The outcome of the certificate step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Certificates {
    /// `status.tls`.
    pub status: TlsStatus,
    /// `status.clientSecret`.
    pub client_secret: Option<String>,
    /// Why the certificates are not ready; `None` when they are.
    pub problem: Option<Problem>,
    /// When the next certificate is due for rotation.
    pub next_rotation: Option<Timestamp>,
    /// Certificates issued in this reconcile, and why.
    pub issued: Vec<(CertKind, Reissue)>,
}

/// The operator's client certificate of a TLS cluster, to connect with;
/// `None` when it is not there (yet).
pub async fn operator_client(
    client: &Client,
    cluster: &ClusterRef,
    spec: &TlsSpec,
) -> Result<Option<CertSecret>, Error> {
    let name = tls::secret_names(cluster, spec).operator_client;
    let secrets = Api::<Secret>::namespaced(client.clone(), cluster.namespace());
    Ok(secrets
        .get_opt(&name)
        .await?
        .as_ref()
        .and_then(CertSecret::read))
}

/// Makes sure the certificates of `cluster` exist and are current.
pub async fn ensure(
    client: &Client,
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    spec: &TlsSpec,
    client_service_ip: Option<IpAddr>,
) -> Result<Certificates, Error> {
    match (&spec.auto, &spec.secret_refs, &spec.issuer_ref) {
        (Some(auto), None, None) => {
            ensure_auto(client, cluster, cluster_ref, auto, client_service_ip).await
        }
        (None, Some(refs), None) => read_user_secrets(client, cluster_ref, refs).await,
        (None, None, Some(issuer)) => {
            cert_manager_certificates(client, cluster, cluster_ref, issuer, client_service_ip).await
        }
        _ => Ok(Certificates {
            problem: Some(problem("InvalidSpec", TlsSpecError::Mode)),
            ..Default::default()
        }),
    }
}

async fn ensure_auto(
    client: &Client,
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    auto: &AutoTls,
    client_service_ip: Option<IpAddr>,
) -> Result<Certificates, Error> {
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.tls.clone())
        .unwrap_or_default();
    let mut out = Certificates {
        client_secret: Some(CertKind::Client.secret_name(cluster_ref)),
        status: TlsStatus {
            last_rotation_request: previous.last_rotation_request.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let durations = match auto.durations() {
        Ok(durations) => durations,
        Err(error) => {
            out.problem = Some(problem("InvalidSpec", error));
            return Ok(out);
        }
    };
    let namespace = cluster_ref.namespace();
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let now = Timestamp::now();
    let stored = match load_or_create_ca(client, &secrets, cluster_ref, now).await? {
        Ok(stored) => stored,
        Err(problem) => {
            out.problem = Some(problem);
            return Ok(out);
        }
    };
    let stored = match begin_ca_rotation(client, cluster, cluster_ref, stored, now).await? {
        Ok(stored) => stored,
        Err(problem) => {
            out.problem = Some(problem);
            return Ok(out);
        }
    };
    let ca = match Ca::from_pem(&stored.cert_pem, &stored.key_pem) {
        Ok(ca) => ca,
        Err(error) => {
            let name = tls::ca_secret_name(cluster_ref);
            out.problem = Some(problem("CAUnreadable", format!("Secret {name}: {error}")));
            return Ok(out);
        }
    };
    if let Ok(info) = pki::inspect(ca.cert_pem()) {
        out.status
            .certificates
            .push(certificate_status(tls::ca_secret_name(cluster_ref), &info));
    }
    let request = cluster.annotations().get(ROTATE_ANNOTATION).cloned();
    let requested = request.is_some() && request != previous.last_rotation_request;
    let due = Due {
        now,
        rotate_before: durations.rotate_before,
        requested,
    };
    let names = tls::served_names(cluster_ref, client_service_ip);
    for kind in CertKind::ALL {
        let name = kind.secret_name(cluster_ref);
        let secret = secrets.get_opt(&name).await?;
        // Each Secret honours a request once, whatever the status says.
        let honoured = secret
            .as_ref()
            .and_then(tls::honoured_request)
            .map(str::to_string);
        let due = Due {
            requested: requested && honoured != request,
            ..due.clone()
        };
        let existing = secret.as_ref().and_then(CertSecret::read);
        let reason = tls::reissue(kind, existing.as_ref(), &stored.bundle, &names, &due);
        let current = match (reason, existing) {
            (None, Some(existing)) => existing,
            (Some(Reissue::TrustChanged), Some(existing)) => {
                let contents = CertSecret {
                    ca_pem: stored.bundle.clone(),
                    ..existing
                };
                server_side_apply(
                    client,
                    namespace,
                    &tls::secret(cluster_ref, name.clone(), &contents, honoured.as_deref()),
                )
                .await?;
                out.issued.push((kind, Reissue::TrustChanged));
                contents
            }
            (reason, _) => {
                let reason = reason.unwrap_or(Reissue::Missing);
                let leaf = kind.request(cluster_ref, &names, durations.validity);
                let issued = match ca.issue(&leaf, now) {
                    Ok(issued) => issued,
                    Err(error) => {
                        out.problem = Some(problem("IssueFailed", error));
                        return Ok(out);
                    }
                };
                let contents = CertSecret {
                    ca_pem: stored.bundle.clone(),
                    cert_pem: issued.cert_pem,
                    key_pem: issued.key_pem,
                };
                // A certificate issued now answers the request standing.
                server_side_apply(
                    client,
                    namespace,
                    &tls::secret(cluster_ref, name.clone(), &contents, request.as_deref()),
                )
                .await?;
                out.issued.push((kind, reason));
                contents
            }
        };
        match pki::inspect(&current.cert_pem) {
            Ok(info) => {
                let at = due.rotation_at(&info);
                out.next_rotation = Some(out.next_rotation.map_or(at, |n| n.min(at)));
                out.status
                    .certificates
                    .push(certificate_status(name, &info));
            }
            Err(error) => out.problem = Some(problem("IssueFailed", error)),
        }
    }
    if requested {
        out.status.last_rotation_request = request;
    }
    if out
        .issued
        .iter()
        .any(|(kind, _)| matches!(kind, CertKind::Server | CertKind::Peer))
    {
        nudge_members(client, cluster_ref, &out.status, &stored.bundle).await?;
    }
    let leaves_current = out.issued.is_empty();
    let (stored, stalled) =
        advance_ca_rotation(client, cluster_ref, stored, &ca, leaves_current, now).await?;
    if let Some(stalled) = stalled {
        out.problem.get_or_insert(stalled);
    }
    out.status.last_ca_rotation_request = stored.request.clone();
    let phase = stored.phase();
    if phase != CaPhase::Stable {
        out.status.ca_rotation = Some(format!("{phase:?}"));
        // Look again soon: the next phase waits on the members only.
        let soon = Timestamp::from_second(now.as_second() + 3).unwrap_or(now);
        out.next_rotation = Some(out.next_rotation.map_or(soon, |n| n.min(soon)));
    }
    Ok(out)
}

/// `issuerRef`: applies a cert-manager `Certificate` per Secret, then reads
/// the Secrets cert-manager wrote. Members are nudged when cert-manager
/// renewed their certificates since the last look.
async fn cert_manager_certificates(
    client: &Client,
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    issuer: &IssuerRef,
    client_service_ip: Option<IpAddr>,
) -> Result<Certificates, Error> {
    let names = tls::served_names(cluster_ref, client_service_ip);
    let certificates = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        cluster_ref.namespace(),
        &cert_manager::api_resource(),
    );
    for kind in CertKind::ALL {
        let certificate = cert_manager::certificate(cluster_ref, kind, issuer, &names);
        let name = cert_manager::certificate_name(cluster_ref, kind);
        let applied = certificates
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&certificate),
            )
            .await;
        match applied {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                return Ok(Certificates {
                    client_secret: Some(CertKind::Client.secret_name(cluster_ref)),
                    problem: Some(Problem {
                        reason: "CertManagerMissing",
                        message: "spec.tls.issuerRef needs cert-manager: the cert-manager.io/v1 Certificate resource is not installed".into(),
                    }),
                    ..Default::default()
                });
            }
            Err(error) => return Err(error.into()),
        }
    }
    let secret_names = tls::secret_names(
        cluster_ref,
        cluster.spec.tls.as_ref().unwrap_or(&TlsSpec::default()),
    );
    let out = read_secrets(client, cluster_ref, &secret_names).await?;
    let previous = cluster.status.as_ref().and_then(|s| s.tls.as_ref());
    let serial = |status: Option<&TlsStatus>, name: &str| {
        status.and_then(|s| {
            s.certificates
                .iter()
                .find(|c| c.secret == name)
                .map(|c| c.serial.clone())
        })
    };
    let renewed = [&secret_names.server, &secret_names.peer]
        .iter()
        .any(|name| {
            let before = serial(previous, name);
            before.is_some() && before != serial(Some(&out.status), name)
        });
    if renewed {
        nudge_members(client, cluster_ref, &out.status, "").await?;
    }
    Ok(out)
}

async fn read_user_secrets(
    client: &Client,
    cluster_ref: &ClusterRef,
    refs: &TlsSecretRefs,
) -> Result<Certificates, Error> {
    let names = tls::SecretNames {
        server: refs.server.clone(),
        peer: refs.peer.clone(),
        operator_client: refs.operator_client.clone(),
        client: refs.client.clone(),
    };
    read_secrets(client, cluster_ref, &names).await
}

/// Reads certificate Secrets kept by someone else (the user, cert-manager).
async fn read_secrets(
    client: &Client,
    cluster_ref: &ClusterRef,
    names: &tls::SecretNames,
) -> Result<Certificates, Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), cluster_ref.namespace());
    let mut out = Certificates {
        client_secret: names.client.clone(),
        ..Default::default()
    };
    let names = [&names.server, &names.peer, &names.operator_client]
        .into_iter()
        .chain(names.client.as_ref());
    for name in names {
        let secret = secrets.get_opt(name).await?;
        let info = match secret.as_ref().and_then(CertSecret::read) {
            None => Err(Problem {
                reason: "SecretMissing",
                message: format!("Secret {name} is missing or lacks ca.crt, tls.crt or tls.key"),
            }),
            Some(contents) => pki::inspect(&contents.cert_pem)
                .map_err(|e| problem("SecretUnreadable", format!("Secret {name}: {e}"))),
        };
        match info {
            Ok(info) => out
                .status
                .certificates
                .push(certificate_status(name.clone(), &info)),
            Err(problem) => {
                out.problem.get_or_insert(problem);
            }
        }
    }
    Ok(out)
}

/// `after`, or sooner when a certificate falls due for rotation before then.
pub fn requeue_with_rotation(
    after: Duration,
    next_rotation: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let Some(at) = next_rotation else {
        return after;
    };
    let until = (at.as_second() - now.as_second()).max(1) as u64;
    after.min(Duration::from_secs(until))
}

/// Reports the certificate step: `status.tls`, `status.clientSecret` and the
/// `CertificatesReady` condition. Without a step this reconcile (a paused
/// cluster, an invalid spec) the last report stays.
pub(super) fn report(
    cluster: &EtcdCluster,
    status: &mut EtcdClusterStatus,
    certificates: Option<Certificates>,
) {
    let previous = cluster.status.clone().unwrap_or_default();
    let Some(certificates) = certificates else {
        status.tls = previous.tls;
        status.client_secret = previous.client_secret;
        status.conditions.extend(
            previous
                .conditions
                .into_iter()
                .filter(|c| c.type_ == status::CERTIFICATES_READY),
        );
        return;
    };
    status.conditions.push(status::certificates_ready(
        certificates
            .problem
            .as_ref()
            .map(|p| (p.reason, p.message.as_str())),
        cluster.metadata.generation,
        &previous.conditions,
        &Time(Timestamp::now()),
    ));
    status.tls = Some(certificates.status);
    status.client_secret = certificates.client_secret;
}

/// An Event naming the certificates issued, and a warning when issuing failed.
pub(super) async fn record_issued<C>(
    cluster: &EtcdCluster,
    certificates: &Certificates,
    ctx: &Context<C>,
) {
    let mut events = Vec::new();
    if !certificates.issued.is_empty() {
        let issued = certificates
            .issued
            .iter()
            .map(|(kind, reason)| format!("{kind:?} ({reason:?})"))
            .collect::<Vec<_>>()
            .join(", ");
        events.push(Event {
            type_: EventType::Normal,
            reason: "CertificatesIssued".into(),
            note: Some(format!("issued certificates: {issued}")),
            action: "IssueCertificates".into(),
            secondary: None,
        });
    }
    // A stalled rotation is reported once, when it stalls, not at every look.
    let already = |reason: &str| {
        cluster.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == status::CERTIFICATES_READY && c.status == "False" && c.reason == reason
            })
        })
    };
    if let Some(problem) = certificates
        .problem
        .as_ref()
        .filter(|p| !(p.reason == STALLED && already(STALLED)))
    {
        events.push(Event {
            type_: EventType::Warning,
            reason: problem.reason.into(),
            note: Some(problem.message.clone()),
            action: "IssueCertificates".into(),
            secondary: None,
        });
    }
    for event in events {
        if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!(%error, "recording event failed");
        }
    }
}

/// Annotates the member pods with the new serials (see [`CERTIFICATES_ANNOTATION`]).
async fn nudge_members(
    client: &Client,
    cluster_ref: &ClusterRef,
    status: &TlsStatus,
    bundle: &str,
) -> Result<(), Error> {
    let serials: BTreeMap<&str, &str> = status
        .certificates
        .iter()
        .map(|c| (c.secret.as_str(), c.serial.as_str()))
        .collect();
    let value = [CertKind::Server, CertKind::Peer]
        .iter()
        .filter_map(|kind| serials.get(kind.secret_name(cluster_ref).as_str()))
        .map(|serial| serial.to_string())
        .chain(ca_rotation::serials(bundle))
        .collect::<Vec<_>>()
        .join(",");
    annotate_members(client, cluster_ref, CERTIFICATES_ANNOTATION, &value).await
}

/// Sets annotation `key` to `value` on every member pod (a pod that
/// already has it is left as it is by the API server).
async fn annotate_members(
    client: &Client,
    cluster_ref: &ClusterRef,
    key: &str,
    value: &str,
) -> Result<(), Error> {
    let pods = Api::<Pod>::namespaced(client.clone(), cluster_ref.namespace());
    let members = pods
        .list(&ListParams::default().labels(&cluster_ref.label_selector()))
        .await?;
    let patch = json!({"metadata": {"annotations": {key: value}}});
    for pod in &members.items {
        let name = pod.name_any();
        if cluster_ref.ordinal_of_member(&name).is_none() {
            continue;
        }
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

fn certificate_status(secret: String, info: &pki::CertInfo) -> CertificateStatus {
    CertificateStatus {
        secret,
        serial: info.serial.clone(),
        not_after: Time(info.not_after),
    }
}

fn problem(reason: &'static str, error: impl std::fmt::Display) -> Problem {
    Problem {
        reason,
        message: error.to_string(),
    }
}
