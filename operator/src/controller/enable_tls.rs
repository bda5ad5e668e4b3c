//! The TLS-enabling step of a reconcile: when a running plain-text cluster
//! gets `spec.tls`, moves it through the phases of [`tls::enable`] (the
//! pod templates roll with the upgrade rollout, one member at a time; the
//! peer URLs move with `MemberUpdate`), records the phase on the
//! StatefulSet and reports it in the `EnablingTLS` condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use super::upgrade::{self, publish};
use super::{act, with_timeout, Context, Error, EtcdConnector};
use crate::builders::ClusterRef;
use crate::crd::{EtcdCluster, EtcdClusterStatus};
use crate::membership::{EtcdApi, StoreView};
use crate::planner::{self, Plan, Progress};
use crate::rollout::Rollout;
use crate::status;
use crate::tls::enable::{self as phases, EnablePhase, Wait};

/// What the step found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The phase waits: for what.
    Waiting(EnablePhase, String),
    /// A member's peer URL was moved.
    UpdatedPeerUrl(EnablePhase, String),
    /// The cluster moved on to this phase.
    Advanced(EnablePhase),
    /// Every member runs the TLS-only template and is ready.
    Enabled,
}

/// The next thing to do in the cluster's phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do: the cluster runs TLS alone (or never had to change).
    Done,
    /// Wait, for the reason given.
    Wait(String),
    /// Move member `id` (at `ordinal`) onto the phase's peer URL.
    UpdatePeerUrl {
        /// Member ID.
        id: u64,
        /// StatefulSet ordinal.
        ordinal: i32,
        /// The URL to advertise.
        url: String,
    },
    /// Move on to this phase.
    Advance(EnablePhase),
}

/// Decides the next thing to do for `cluster` (whose phase it carries),
/// given whether every pod runs the phase's template and is ready
/// (`rolled`) and the members' peer URLs. Pure.
pub fn next(cluster: &ClusterRef, rolled: bool, members: &[(u64, Vec<String>)]) -> Next {
    let phase = cluster.phase();
    if phase == EnablePhase::Tls {
        return Next::Done;
    }
    let mut stray = None;
    let mut to_move = None;
    for (id, urls) in members {
        let Some(ordinal) = urls.first().and_then(|u| planner::ordinal_of(cluster, u)) else {
            stray.get_or_insert_with(|| {
                format!("member {id:x} has peer URLs {urls:?}, not one the operator gave")
            });
            continue;
        };
        let wanted = cluster.peer_url(ordinal);
        if urls[..] != [wanted.clone()] {
            to_move.get_or_insert((*id, ordinal, wanted));
        }
    }
    if let Some(why) = stray {
        return Next::Wait(why);
    }
    let advertised = to_move.is_none();
    if let (Wait::Advertised, Some((id, ordinal, url))) = (phase.wait(), to_move) {
        return Next::UpdatePeerUrl { id, ordinal, url };
    }
    let after = phases::advance(phase, true, rolled, advertised);
    if after != phase {
        return Next::Advance(after);
    }
    Next::Wait(match phase.wait() {
        Wait::Rolled => "every member to run the phase's pod template and be ready".into(),
        Wait::Advertised => "every member to advertise its new peer URL".into(),
        Wait::Done => String::new(),
    })
}

/// Takes the step of a cluster whose `spec.tls` is set and that is not on
/// TLS alone yet. Called once the membership planner and the rollout had
/// their turn: it acts only on a stable cluster.
#[allow(clippy::too_many_arguments)]
pub async fn step<C: EtcdConnector>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    plan: &Plan,
    volumes: super::expand::Volumes<'_>,
    ready_pods: usize,
    store: &StoreView,
    rollout: Option<&upgrade::Outcome>,
    etcd: &C::Api,
    ctx: &Context<C>,
) -> Result<Option<Transition>, Error> {
    let phase = cluster_ref.phase();
    let finishing = phase == EnablePhase::Tls && enabling(cluster);
    if cluster.spec.tls.is_none() || (phase == EnablePhase::Tls && !finishing) {
        return Ok(None);
    }
    if plan.step.is_some() || plan.progress != Progress::Stable {
        let why = format!("the cluster to be stable (now {:?})", plan.progress);
        return Ok(Some(Transition::Waiting(phase, why)));
    }
    let rolled = rollout.is_some_and(|o| o.rollout == Rollout::UpToDate)
        && ready_pods == store.members.len();
    if finishing {
        return Ok(Some(match rolled {
            true => Transition::Enabled,
            false => Transition::Waiting(
                phase,
                "every member to restart without the TLS side ports".into(),
            ),
        }));
    }
    let members: Vec<(u64, Vec<String>)> = store
        .members
        .iter()
        .map(|(m, _)| (m.id, m.peer_urls.clone()))
        .collect();
    match next(cluster_ref, rolled, &members) {
        Next::Done => Ok(None),
        Next::Wait(why) => Ok(Some(Transition::Waiting(phase, why))),
        Next::UpdatePeerUrl { id, ordinal, url } => {
            let name = cluster_ref.member_name(ordinal);
            let note = format!("{name} ({id:x}) now advertises {url}");
            if let Err(error) = with_timeout(etcd.member_update(id, vec![url])).await {
                let note = format!("moving the peer URL of {name}: {error}");
                publish(
                    cluster,
                    ctx,
                    EventType::Warning,
                    "PeerURLUpdateFailed",
                    "UpdateMember",
                    note,
                )
                .await;
                return Err(Error::Membership(error));
            }
            publish(
                cluster,
                ctx,
                EventType::Normal,
                "PeerURLUpdated",
                "UpdateMember",
                note.clone(),
            )
            .await;
            Ok(Some(Transition::UpdatedPeerUrl(phase, note)))
        }
        Next::Advance(after) => {
            // The objects of the new phase now, so the next reconcile finds
            // the StatefulSet's template and annotation in step.
            // (Its volume report is the next reconcile's.)
            let next = cluster_ref.clone().with_phase(after);
            act(cluster, &next, plan, volumes, ctx).await?;
            let note = format!(
                "turning TLS on: phase {} done, now {}",
                phase.name(),
                after.name()
            );
            publish(
                cluster,
                ctx,
                EventType::Normal,
                "TLSPhaseAdvanced",
                "EnableTLS",
                note,
            )
            .await;
            Ok(Some(Transition::Advanced(after)))
        }
    }
}

/// Whether the `EnablingTLS` condition says TLS is being turned on.
fn enabling(cluster: &EtcdCluster) -> bool {
    cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == status::ENABLING_TLS && c.status == "True")
    })
}

/// Writes the `EnablingTLS` condition: true while TLS is being turned on,
/// false once every member runs TLS alone and is ready (only for a
/// cluster that went through it; one created with TLS never gets it).
/// Without a transition the previous condition stays.
pub fn report(
    cluster: &EtcdCluster,
    status: &mut EtcdClusterStatus,
    transition: Option<&Transition>,
) {
    let previous = cluster.status.clone().unwrap_or_default();
    let (state, reason, message) = match transition {
        Some(Transition::Waiting(phase, why)) => (
            true,
            phase.name(),
            format!("phase {}: waiting for {why}", phase.name()),
        ),
        Some(Transition::UpdatedPeerUrl(phase, note)) => (
            true,
            phase.name(),
            format!("phase {}: {note}", phase.name()),
        ),
        Some(Transition::Advanced(after)) => (
            true,
            after.name(),
            format!("moved on to phase {}", after.name()),
        ),
        Some(Transition::Enabled) => (
            false,
            "Enabled",
            "members serve TLS alone and the operator talks to them with its client certificate"
                .to_string(),
        ),
        None => {
            status.conditions.extend(
                previous
                    .conditions
                    .iter()
                    .filter(|c| c.type_ == status::ENABLING_TLS)
                    .cloned(),
            );
            return;
        }
    };
    status.conditions.push(status::condition_of(
        status::ENABLING_TLS,
        state,
        reason,
        message,
        cluster.metadata.generation,
        &previous.conditions,
        &Time(Timestamp::now()),
    ));
}

#[cfg(test)]
#[path = "enable_tls/tests.rs"]
mod tests;
