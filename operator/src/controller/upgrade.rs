//! The rollout step of a reconcile: reads each member's pod against the
//! StatefulSet's update revision, asks [`rollout::plan`] for the next step,
//! carries it out (delete one pod, or move leadership), and reports it in
//! Events, the `Upgrading` condition and `status.updatedReplicas`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};

use super::{delete_if_present, is_ready, Context, Error, EtcdConnector};
use crate::builders::ClusterRef;
use crate::crd::{EtcdCluster, EtcdClusterStatus};
use crate::membership::{EtcdApi, StoreView};
use crate::planner;
use crate::rollout::{self, PodState, Rollout, RolloutMember};
use crate::status;

/// The label the StatefulSet controller puts on each pod: the revision of
/// the template it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Requeue interval while a rollout is under way: the next member waits
/// only for the last one to be ready and caught up.
pub const REQUEUE_ROLLING: Duration = Duration::from_secs(3);

/// What the rollout step found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The planner's answer.
    pub rollout: Rollout,
    /// The StatefulSet's update revision.
    pub revision: Option<String>,
    /// Members on the update revision, of members with a pod.
    pub progress: (usize, usize),
}

impl Outcome {
    /// Whether the cluster should be looked at again soon.
    pub fn rolling(&self) -> bool {
        matches!(
            self.rollout,
            Rollout::Observing
                | Rollout::Waiting(..)
                | Rollout::Restart(_)
                | Rollout::MoveLeader { .. }
        )
    }
}

/// Plans the rollout of `cluster` and takes its step.
pub async fn step<C: EtcdConnector>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    stateful_set: Option<&StatefulSet>,
    pods: &[Pod],
    store: &StoreView,
    etcd: &C::Api,
    ctx: &Context<C>,
) -> Result<Outcome, Error> {
    let revision = update_revision(stateful_set);
    let members = members(
        cluster_ref,
        store,
        pods,
        revision.as_deref(),
        Timestamp::now(),
    );
    let observed = revision.is_some()
        && stateful_set.is_some_and(|sts| {
            sts.status.as_ref().and_then(|s| s.observed_generation) == sts.metadata.generation
        });
    let outcome = Outcome {
        rollout: rollout::plan_within(
            &members,
            observed,
            &cluster.spec.rollout_bounds().unwrap_or_default(),
        ),
        progress: rollout::progress(&members),
        revision,
    };
    let (updated, total) = outcome.progress;
    let revision = outcome.revision.as_deref().unwrap_or_default();
    match &outcome.rollout {
        Rollout::Restart(ordinal) => {
            let name = cluster_ref.member_name(*ordinal);
            let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), cluster_ref.namespace());
            delete_if_present(&pods_api, &name).await?;
            let note = format!(
                "restarting {name} onto revision {revision} ({updated}/{total} members updated)"
            );
            publish(
                cluster,
                ctx,
                EventType::Normal,
                "MemberRestarted",
                "RestartMember",
                note,
            )
            .await;
        }
        Rollout::MoveLeader {
            from,
            to,
            to_ordinal,
        } => {
            let from_name = cluster_ref.member_name(*from);
            let to_name = cluster_ref.member_name(*to_ordinal);
            let note = format!("moving leadership from {from_name} to {to_name}, which runs revision {revision}, before restarting {from_name}");
            let result = match leader_client_url(cluster_ref, store) {
                Some(url) => super::with_timeout(etcd.move_leader(&url, *to)).await,
                None => Err(crate::membership::EtcdError::NotLeader),
            };
            match result {
                Ok(()) => {
                    publish(
                        cluster,
                        ctx,
                        EventType::Normal,
                        "LeaderMoved",
                        "MoveLeader",
                        note,
                    )
                    .await;
                }
                Err(error) => {
                    let note = format!("{note}: {error}");
                    publish(
                        cluster,
                        ctx,
                        EventType::Warning,
                        "MoveLeaderFailed",
                        "MoveLeader",
                        note,
                    )
                    .await;
                    return Err(Error::Membership(error));
                }
            }
        }
        Rollout::Failed(ordinal, failure) => {
            let already = cluster.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == status::UPGRADING && c.reason == "UpgradeFailed")
            });
            if !already {
                let note = format!(
                    "{} on revision {revision} is {failure}: rollout stopped, no further member is restarted",
                    cluster_ref.member_name(*ordinal)
                );
                publish(
                    cluster,
                    ctx,
                    EventType::Warning,
                    "UpgradeFailed",
                    "Upgrade",
                    note,
                )
                .await;
            }
        }
        Rollout::UpToDate | Rollout::Observing | Rollout::Waiting(..) => {}
    }
    Ok(outcome)
}

/// Writes the rollout into `status`: the `Upgrading` condition and the
/// revision counts. Without an outcome (no rollout was planned in this
/// reconcile) the previous ones stay.
pub fn report(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    status: &mut EtcdClusterStatus,
    outcome: Option<&Outcome>,
) {
    let previous = cluster.status.clone().unwrap_or_default();
    let keep_previous = |status: &mut EtcdClusterStatus| {
        status.update_revision = previous.update_revision.clone();
        status.updated_replicas = previous.updated_replicas;
        status.conditions.extend(
            previous
                .conditions
                .iter()
                .filter(|c| c.type_ == status::UPGRADING)
                .cloned(),
        );
    };
    let Some(outcome) = outcome.filter(|o| o.rollout != Rollout::Observing) else {
        keep_previous(status);
        return;
    };
    let (updated, total) = outcome.progress;
    let revision = outcome.revision.clone().unwrap_or_default();
    let name = |ordinal: &i32| cluster_ref.member_name(*ordinal);
    let (state, reason, message) = match &outcome.rollout {
        Rollout::UpToDate | Rollout::Observing => (
            false,
            "UpToDate",
            format!("all {total} members run revision {revision}"),
        ),
        Rollout::Waiting(ordinal, why) => (
            true,
            "WaitingForMember",
            format!(
                "{updated}/{total} members on revision {revision}; waiting: {} {why}",
                name(ordinal)
            ),
        ),
        Rollout::Restart(ordinal) => (
            true,
            "RestartingMember",
            format!(
                "{updated}/{total} members on revision {revision}; restarting {}",
                name(ordinal)
            ),
        ),
        Rollout::MoveLeader {
            from, to_ordinal, ..
        } => (
            true,
            "MovingLeader",
            format!(
                "{updated}/{total} members on revision {revision}; moving leadership from {} to {}",
                name(from),
                name(to_ordinal)
            ),
        ),
        Rollout::Failed(ordinal, failure) => (
            false,
            "UpgradeFailed",
            format!(
                "{} on revision {revision} is {failure}; rollout stopped at {updated}/{total} members",
                name(ordinal)
            ),
        ),
    };
    status.conditions.push(status::upgrading(
        state,
        reason,
        message,
        cluster.metadata.generation,
        &previous.conditions,
        &Time(Timestamp::now()),
    ));
    status.update_revision = outcome.revision.clone();
    status.updated_replicas = Some(updated as i32);
}

/// The StatefulSet's update revision, once its controller has set one.
fn update_revision(stateful_set: Option<&StatefulSet>) -> Option<String> {
    stateful_set?
        .status
        .as_ref()?
        .update_revision
        .clone()
        .filter(|r| !r.is_empty())
}

/// The operator's members with their pods, as the rollout planner takes them.
pub fn members(
    cluster: &ClusterRef,
    store: &StoreView,
    pods: &[Pod],
    revision: Option<&str>,
    now: Timestamp,
) -> Vec<RolloutMember> {
    let leader = store.leader();
    let statuses = || store.members.iter().filter_map(|(_, s)| s.as_ref());
    let leader_index = statuses()
        .find(|s| Some(s.member_id) == leader)
        .or_else(|| statuses().max_by_key(|s| s.raft_index))
        .map_or(0, |s| s.raft_index);
    store
        .members
        .iter()
        .filter_map(|(member, status)| {
            let ordinal = planner::ordinal_of(cluster, member.peer_urls.first()?)?;
            let name = cluster.member_name(ordinal);
            let pod = pods.iter().find(|p| p.name_any() == name);
            Some(RolloutMember {
                ordinal,
                id: member.id,
                is_leader: leader == Some(member.id),
                is_learner: member.is_learner,
                lag: status
                    .as_ref()
                    .map(|s| leader_index.saturating_sub(s.raft_applied_index)),
                pod: pod.map(|p| pod_state(p, revision, now)),
            })
        })
        .collect()
}

fn pod_state(pod: &Pod, revision: Option<&str>, now: Timestamp) -> PodState {
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|c| c.name == "ferrocd"))
        .map_or(0, |c| c.restart_count);
    let age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or_default();
    PodState {
        updated: revision.is_some()
            && pod.labels().get(REVISION_LABEL).map(String::as_str) == revision,
        ready: is_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        restarts,
        age,
    }
}

/// The client URL of the member that leads, as the operator talks to it.
fn leader_client_url(cluster: &ClusterRef, store: &StoreView) -> Option<String> {
    let leader = store.leader()?;
    store
        .members
        .iter()
        .find(|(m, _)| m.id == leader)
        .and_then(|(m, _)| client_url(cluster, m))
}

/// The client URL the operator asks `member` at: the one of the phase
/// for a member it named, the first advertised one otherwise.
pub fn client_url(cluster: &ClusterRef, member: &crate::membership::Member) -> Option<String> {
    match member
        .peer_urls
        .first()
        .and_then(|u| planner::ordinal_of(cluster, u))
    {
        Some(ordinal) => Some(cluster.client_url(ordinal)),
        None => member.client_urls.first().cloned(),
    }
}

/// Events are a courtesy: failing to record one fails nothing.
pub(super) async fn publish<C>(
    cluster: &EtcdCluster,
    ctx: &Context<C>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "recording event failed");
    }
}
