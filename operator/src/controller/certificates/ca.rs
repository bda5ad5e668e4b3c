//! The CA of an `auto` cluster: made once, and replaced in the phases of
//! [`crate::tls::ca_rotation`] (decisions there, the Secret writes and the
//! members' check here).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt};

use super::{problem, trust_check, Problem};
use crate::builders::ClusterRef;
use crate::controller::{server_side_apply, Error};
use crate::crd::EtcdCluster;
use crate::tls::ca_rotation::{
    self, CaPhase, CaSecret, CaStep, ROTATE_CA_ANNOTATION, ROTATION_DEADLINE,
};
use crate::tls::pki::{self, Ca};
use crate::tls::{self, CertKind};

/// Lifetime of the client certificate a CA rotation checks members with.
const CHECK_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// Stable -> Trust when a new CA is wanted: a new `ferrocd.io/rotate-ca`
/// value or the CA near its end. The new CA is stored beside the old one.
pub(super) async fn begin_ca_rotation(
    client: &Client,
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    stored: CaSecret,
    now: Timestamp,
) -> Result<Result<CaSecret, Problem>, Error> {
    let annotation = cluster.annotations().get(ROTATE_CA_ANNOTATION);
    let wanted = pki::inspect(&stored.cert_pem).is_ok_and(|info| {
        ca_rotation::wanted(
            &info,
            now,
            annotation.map(String::as_str),
            stored.request.as_deref(),
        )
    });
    if ca_rotation::step(stored.phase(), wanted, false, false) != CaStep::Begin {
        return Ok(Ok(stored));
    }
    let next = match Ca::generate(&tls::ca_common_name(cluster_ref), now) {
        Ok(next) => next,
        Err(error) => return Ok(Err(problem("IssueFailed", error))),
    };
    let begun = stored
        .begin(
            next.cert_pem().to_string(),
            next.key_pem().to_string(),
            annotation.cloned(),
        )
        .entered(now);
    store_ca(client, cluster_ref, &begun).await?;
    tracing::info!(cluster = %cluster_ref.name(), "CA rotation: new CA trusted beside the old one");
    Ok(Ok(begun))
}

/// Trust -> Reissue and Reissue -> Stable, once the leaf Secrets are
/// current and every member passed the phase's check (see [`trust_check`]).
/// A phase whose members have not caught up within [`ROTATION_DEADLINE`]
/// comes back with a `RotationStalled` problem.
pub(super) async fn advance_ca_rotation(
    client: &Client,
    cluster_ref: &ClusterRef,
    stored: CaSecret,
    ca: &Ca,
    leaves_current: bool,
    now: Timestamp,
) -> Result<(CaSecret, Option<Problem>), Error> {
    let phase = stored.phase();
    if phase == CaPhase::Stable || !leaves_current {
        return Ok((stored, None));
    }
    // A rotation begun by an operator that did not record its start is
    // timed from now.
    let stored = match stored.since {
        Some(_) => stored,
        None => {
            let timed = stored.entered(now);
            store_ca(client, cluster_ref, &timed).await?;
            timed
        }
    };
    // Trust: members must accept the new CA's clients, whatever they serve.
    // Reissue: members must serve the new CA's certificates and accept its
    // clients, checked trusting the new CA alone.
    let (signer, trust) = match (&stored.next, phase) {
        (Some((cert, key)), CaPhase::Trust) => {
            (Ca::from_pem(cert, key).ok(), stored.bundle.clone())
        }
        _ => (
            Ca::from_pem(ca.cert_pem(), ca.key_pem()).ok(),
            stored.cert_pem.clone(),
        ),
    };
    let request =
        CertKind::OperatorClient.request(cluster_ref, &Default::default(), CHECK_VALIDITY);
    let Some(identity) = signer.and_then(|signer| signer.issue(&request, now).ok()) else {
        return Ok((stored, None));
    };
    let (caught_up, stall) = match trust_check::members_accept(
        client,
        cluster_ref,
        &trust,
        &identity,
    )
    .await
    {
        Ok(()) => (true, None),
        Err(reason) => {
            tracing::info!(cluster = %cluster_ref.name(), ?phase, %reason, "CA rotation waits for the members");
            if let Some(round) = ca_rotation::refresh_round(stored.since, now) {
                let value = format!("{phase:?}-{round}");
                super::annotate_members(client, cluster_ref, super::REFRESH_ANNOTATION, &value)
                    .await?;
            }
            let stall = ca_rotation::stalled(stored.since, now, ROTATION_DEADLINE).map(|waited| {
                    problem(
                        super::STALLED,
                        format!(
                            "CA rotation phase {phase:?} has waited {}s (deadline {}s) for the members: {reason}",
                            waited.as_secs(),
                            ROTATION_DEADLINE.as_secs()
                        ),
                    )
                });
            (false, stall)
        }
    };
    // Clients that follow the client Secret get the phase's least time.
    let ready = caught_up && ca_rotation::lasted(stored.since, now, ca_rotation::MIN_PHASE);
    let next = match ca_rotation::step(phase, false, ready, leaves_current) {
        CaStep::HandOver => stored.hand_over().entered(now),
        CaStep::Finish => stored.finish(),
        CaStep::Keep | CaStep::Begin => return Ok((stored, stall)),
    };
    store_ca(client, cluster_ref, &next).await?;
    tracing::info!(cluster = %cluster_ref.name(), from = ?phase, to = ?next.phase(), "CA rotation advanced");
    Ok((next, None))
}

async fn store_ca(
    client: &Client,
    cluster_ref: &ClusterRef,
    stored: &CaSecret,
) -> Result<(), Error> {
    let secret = stored.secret(cluster_ref, tls::ca_secret_name(cluster_ref));
    server_side_apply(client, cluster_ref.namespace(), &secret).await?;
    Ok(())
}

/// The CA Secret, or a new CA stored there. A CA Secret that does not
/// parse is a problem to report, never something to overwrite: every
/// certificate of the cluster hangs on it.
pub(super) async fn load_or_create_ca(
    client: &Client,
    secrets: &Api<Secret>,
    cluster_ref: &ClusterRef,
    now: Timestamp,
) -> Result<Result<CaSecret, Problem>, Error> {
    let name = tls::ca_secret_name(cluster_ref);
    if let Some(secret) = secrets.get_opt(&name).await? {
        let Some(stored) = CaSecret::read(&secret) else {
            return Ok(Err(Problem {
                reason: "CAUnreadable",
                message: format!("Secret {name} lacks ca.crt, tls.crt or tls.key"),
            }));
        };
        return Ok(Ok(stored));
    }
    let ca = match Ca::generate(&tls::ca_common_name(cluster_ref), now) {
        Ok(ca) => ca,
        Err(error) => return Ok(Err(problem("IssueFailed", error))),
    };
    let stored = CaSecret::new(ca.cert_pem().to_string(), ca.key_pem().to_string());
    store_ca(client, cluster_ref, &stored).await?;
    Ok(Ok(stored))
}
