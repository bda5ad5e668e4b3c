//! Replacing an `auto` cluster's CA with no downtime.
//!
//! Members check each other's and clients' certificates against the trust
//! bundle in their `ca.crt` and re-read it on every handshake, so a CA is
//! replaced in three phases, each entered only once the members have
//! caught up with the previous one:
//!
//! 1. **Trust**: a new CA is made and added to the bundle after the old one
//!    (leaves stay signed by the old CA; only their `ca.crt` changes). Ends
//!    when every member accepts a client certificate signed by the new CA
//!    on its client and peer ports.
//! 2. **Reissue**: the new CA becomes the issuer (first in the bundle,
//!    which still holds the old one) and every leaf, the operator's and the
//!    users' client certificates too, is reissued from it. Ends when every
//!    leaf Secret is signed by the new CA and every member serves a
//!    certificate that chains to the new CA alone.
//! 3. **Stable**: the old CA leaves the bundle.
//!
//! The phase lives in the CA Secret itself (`next.crt`/`next.key` during
//! Trust, a bundle of two during Reissue), so an operator restarted
//! mid-rotation picks up where the last one stopped. Clients of
//! `status.clientSecret` see the bundle during the transition and must
//! read the Secret again before the old CA is dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;

use super::pki::CertInfo;
use super::{CertSecret, CA_CRT, TLS_CRT, TLS_KEY};
use crate::builders::ClusterRef;

/// Annotation on the `EtcdCluster` asking for a new CA: any new value
/// starts one rotation (recorded in the CA Secret and in
/// `status.tls.lastCaRotationRequest`).
pub const ROTATE_CA_ANNOTATION: &str = "ferrocd.io/rotate-ca";
/// A CA with less than this left is replaced: a year.
pub const CA_ROTATE_BEFORE: Duration = Duration::from_secs(365 * 86400);
/// CA Secret key of the CA to come, during the Trust phase.
pub const NEXT_CRT: &str = "next.crt";
/// CA Secret key of the private key of the CA to come.
pub const NEXT_KEY: &str = "next.key";
/// CA Secret key of the last honoured `ferrocd.io/rotate-ca` value.
pub const REQUEST: &str = "rotation-request";
/// CA Secret key of when the current rotation phase began (RFC 3339).
pub const PHASE_SINCE: &str = "phase-since";
/// How long the members may take to catch up with a rotation phase before
/// the rotation counts as stalled: the kubelet refreshes mounted Secrets
/// within a minute or two, so this is well past a healthy rotation.
pub const ROTATION_DEADLINE: Duration = Duration::from_secs(10 * 60);

/// The least time a rotation phase lasts, however fast the members catch
/// up: clients that follow `status.clientSecret` get this long to read
/// the two-CA bundle (Trust) and their reissued certificate (Reissue)
/// before the next phase relies on them. The real-node test's writer,
/// which reads the Secret again every quarter second, saw one write fail
/// when the phases took a second each.
pub const MIN_PHASE: Duration = Duration::from_secs(10);

/// Whether a phase that began at `since` has lasted `least` by `now` (an
/// unknown start has not).
pub fn lasted(since: Option<Timestamp>, now: Timestamp, least: Duration) -> bool {
    since.is_some_and(|since| now.as_second() - since.as_second() >= least.as_secs() as i64)
}

/// Where a CA rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaPhase {
    /// One CA, trusted and issuing.
    Stable,
    /// Old CA issuing, both trusted.
    Trust,
    /// New CA issuing, both trusted.
    Reissue,
}

/// The CA Secret of an `auto` cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct CaSecret {
    /// The issuing CA's certificate (`tls.crt`).
    pub cert_pem: String,
    /// The issuing CA's key (`tls.key`).
    pub key_pem: String,
    /// What members and clients trust (`ca.crt`), the issuing CA first.
    pub bundle: String,
    /// The CA to come, certificate and key, during Trust.
    pub next: Option<(String, String)>,
    /// The last honoured rotation request.
    pub request: Option<String>,
    /// When the current phase (Trust or Reissue) began.
    pub since: Option<Timestamp>,
}

impl std::fmt::Debug for CaSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSecret")
            .field("phase", &self.phase())
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// What to do with the CA in this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStep {
    /// Nothing (no rotation, or members still catching up).
    Keep,
    /// Stable -> Trust: make a new CA and add it to the bundle.
    Begin,
    /// Trust -> Reissue: the new CA issues from now on.
    HandOver,
    /// Reissue -> Stable: the old CA leaves the bundle.
    Finish,
}

/// The next step from `phase`: `wanted` is a new rotation (asked for or
/// the CA near expiry), `members_caught_up` whether every member passed
/// the check of the phase, `leaves_current` whether every leaf Secret
/// already holds what the phase wants.
pub fn step(phase: CaPhase, wanted: bool, members_caught_up: bool, leaves_current: bool) -> CaStep {
    match phase {
        CaPhase::Stable if wanted => CaStep::Begin,
        CaPhase::Stable => CaStep::Keep,
        CaPhase::Trust if leaves_current && members_caught_up => CaStep::HandOver,
        CaPhase::Reissue if leaves_current && members_caught_up => CaStep::Finish,
        CaPhase::Trust | CaPhase::Reissue => CaStep::Keep,
    }
}

/// How long a rotation phase that began at `since` has waited for the
/// members, when that is more than `deadline`; `None` while within it (or
/// when the start is unknown).
pub fn stalled(since: Option<Timestamp>, now: Timestamp, deadline: Duration) -> Option<Duration> {
    let waited = now.as_second() - since?.as_second();
    (waited > deadline.as_secs() as i64).then(|| Duration::from_secs(waited as u64))
}

/// While members lag behind a rotation phase, their pods are updated
/// again this often: each pod update makes the kubelet refresh the pod's
/// Secret volumes from what it has now, instead of at its next periodic
/// sync (a minute or more). The update at issue time can come before the
/// kubelet has seen the new Secret, and then refreshes nothing new.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);

/// Which refresh round a phase that began at `since` is in at `now`:
/// `None` for the first [`REFRESH_EVERY`] (the update at issue time
/// covers it) or an unknown start, then 1, 2, ... A pod annotated with
/// the same round is not updated again.
pub fn refresh_round(since: Option<Timestamp>, now: Timestamp) -> Option<i64> {
    let waited = now.as_second() - since?.as_second();
    let round = waited / REFRESH_EVERY.as_secs() as i64;
    (round >= 1).then_some(round)
}

/// Whether a new CA is wanted: a new annotation value, or less than
/// [`CA_ROTATE_BEFORE`] left on the CA described by `ca`.
pub fn wanted(
    ca: &CertInfo,
    now: Timestamp,
    annotation: Option<&str>,
    honoured: Option<&str>,
) -> bool {
    let requested = annotation.is_some() && annotation != honoured;
    let left = ca.not_after.as_second() - now.as_second();
    requested || left < CA_ROTATE_BEFORE.as_secs() as i64
}

impl CaSecret {
    /// A single CA, trusted and issuing.
    pub fn new(cert_pem: String, key_pem: String) -> CaSecret {
        CaSecret {
            bundle: cert_pem.clone(),
            cert_pem,
            key_pem,
            next: None,
            request: None,
            since: None,
        }
    }

    /// The Secret's contents; `None` without `ca.crt`, `tls.crt` and `tls.key`.
    pub fn read(secret: &Secret) -> Option<CaSecret> {
        let stored = CertSecret::read(secret)?;
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        let next = text(NEXT_CRT).zip(text(NEXT_KEY));
        Some(CaSecret {
            cert_pem: stored.cert_pem,
            key_pem: stored.key_pem,
            bundle: stored.ca_pem,
            next,
            request: text(REQUEST),
            since: text(PHASE_SINCE).and_then(|t| t.parse().ok()),
        })
    }

    /// The Secret `name` holding this.
    pub fn secret(&self, cluster: &ClusterRef, name: String) -> Secret {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let mut data = BTreeMap::from([
            (CA_CRT.to_string(), bytes(&self.bundle)),
            (TLS_CRT.to_string(), bytes(&self.cert_pem)),
            (TLS_KEY.to_string(), bytes(&self.key_pem)),
        ]);
        if let Some((cert, key)) = &self.next {
            data.insert(NEXT_CRT.to_string(), bytes(cert));
            data.insert(NEXT_KEY.to_string(), bytes(key));
        }
        if let Some(request) = &self.request {
            data.insert(REQUEST.to_string(), bytes(request));
        }
        if let Some(since) = self.since.filter(|_| self.phase() != CaPhase::Stable) {
            data.insert(PHASE_SINCE.to_string(), bytes(&since.to_string()));
        }
        let mut secret = super::secret(
            cluster,
            name,
            &CertSecret {
                ca_pem: String::new(),
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            None,
        );
        secret.data = Some(data);
        secret
    }

    /// The phase this Secret is in.
    pub fn phase(&self) -> CaPhase {
        if self.next.is_some() {
            CaPhase::Trust
        } else if certificates_in(&self.bundle) > 1 {
            CaPhase::Reissue
        } else {
            CaPhase::Stable
        }
    }

    /// Stable -> Trust with the new CA `cert_pem`/`key_pem`, honouring `request`.
    pub fn begin(&self, cert_pem: String, key_pem: String, request: Option<String>) -> CaSecret {
        CaSecret {
            bundle: join(&self.cert_pem, &cert_pem),
            next: Some((cert_pem, key_pem)),
            request: request.or_else(|| self.request.clone()),
            ..self.clone()
        }
    }

    /// The same Secret with its phase begun at `now`.
    pub fn entered(self, now: Timestamp) -> CaSecret {
        CaSecret {
            since: Some(now),
            ..self
        }
    }

    /// Trust -> Reissue: the new CA issues, both stay trusted.
    pub fn hand_over(&self) -> CaSecret {
        let Some((cert_pem, key_pem)) = self.next.clone() else {
            return self.clone();
        };
        CaSecret {
            bundle: join(&cert_pem, &self.cert_pem),
            cert_pem,
            key_pem,
            next: None,
            request: self.request.clone(),
            since: self.since,
        }
    }

    /// Reissue -> Stable: only the issuing CA is trusted.
    pub fn finish(&self) -> CaSecret {
        CaSecret {
            bundle: self.cert_pem.clone(),
            since: None,
            ..self.clone()
        }
    }
}

/// The serial of every certificate in a PEM bundle, in order.
pub fn serials(bundle: &str) -> Vec<String> {
    certificates(bundle)
        .filter_map(|pem| super::pki::inspect(pem).ok())
        .map(|info| info.serial)
        .collect()
}

/// Each PEM certificate block of `bundle`.
pub fn certificates(bundle: &str) -> impl Iterator<Item = &str> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|part| part.contains("-----BEGIN CERTIFICATE-----"))
}

fn join(first: &str, second: &str) -> String {
    format!("{}\n{}\n", first.trim_end(), second.trim_end())
}

fn certificates_in(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

#[cfg(test)]
#[path = "ca_rotation/tests.rs"]
mod tests;
