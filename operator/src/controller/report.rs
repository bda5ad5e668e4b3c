//! The status a reconcile writes: phase and conditions from the plan, the
//! member list joined with pod readiness and PVC bookkeeping, and what the
//! store last said when it does not answer.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::Seen;
use crate::builders::ClusterRef;
use crate::crd::{EtcdCluster, EtcdClusterStatus, MemberStatus};
use crate::membership::{Member, StoreView};
use crate::planner::{self, Plan};
use crate::status::{self, Observation};
use crate::volumes::{self, MemberVolume};

pub(super) fn build_status(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    plan: &Plan,
    seen: &Seen,
) -> EtcdClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let (phase, conditions) = status::summarize(
        &plan.progress,
        &Observation {
            store_answered: seen.store.is_some(),
            generation: cluster.metadata.generation,
            previous_phase: previous.phase,
            previous_conditions: &previous.conditions,
        },
        &Time(Timestamp::now()),
    );
    let mut next = EtcdClusterStatus {
        observed_generation: cluster.metadata.generation,
        phase: Some(phase),
        conditions,
        client_endpoint: Some(cluster_ref.client_endpoint()),
        ..Default::default()
    };
    match &seen.store {
        Some(store) => {
            let leader = store.leader();
            let recorded = volumes::recorded(&previous.members);
            let volumes = member_volumes(cluster_ref, store);
            next.members = store
                .members
                .iter()
                .zip(&volumes)
                .map(|((member, status), volume)| MemberStatus {
                    name: member_name(cluster_ref, member),
                    id: format!("{:x}", member.id),
                    peer_url: member.peer_urls.first().cloned().unwrap_or_default(),
                    client_urls: member.client_urls.clone(),
                    is_learner: member.is_learner,
                    is_leader: leader == Some(member.id),
                    healthy: status.is_some(),
                    pvc_uid: volumes::record(&recorded, volume, &seen.pvc_uids),
                })
                .collect();
            next.leader = store
                .members
                .iter()
                .find(|(m, _)| leader == Some(m.id))
                .map(|(m, _)| member_name(cluster_ref, m));
            next.version = store
                .members
                .iter()
                .find_map(|(_, s)| s.as_ref().map(|s| s.version.clone()))
                .or(previous.version);
            next.cluster_id = cluster_id(store.cluster_id).or(previous.cluster_id);
        }
        // The store did not answer: keep the last member list, known to no
        // one as healthy, and the identity and version last seen.
        None => {
            next.cluster_id = previous.cluster_id;
            next.version = previous.version;
            next.members = previous
                .members
                .into_iter()
                .map(|m| MemberStatus {
                    healthy: false,
                    is_leader: false,
                    ..m
                })
                .collect();
        }
    }
    next.replicas = next.members.len() as i32;
    next.ready_replicas = next
        .members
        .iter()
        .filter(|m| m.healthy && seen.ready_pods.contains(&m.name))
        .count() as i32;
    next
}

/// Each member of `store` with the ordinal of its pod, for the PVC bookkeeping.
pub(super) fn member_volumes(cluster: &ClusterRef, store: &StoreView) -> Vec<MemberVolume> {
    store
        .members
        .iter()
        .map(|(member, status)| MemberVolume {
            id: member.id,
            ordinal: member
                .peer_urls
                .first()
                .and_then(|url| planner::ordinal_of(cluster, url)),
            healthy: status.is_some(),
        })
        .collect()
}

/// The member's name; for a member that has not started yet (etcd lists it
/// nameless) the name of the pod it will run in.
fn member_name(cluster: &ClusterRef, member: &Member) -> String {
    if !member.name.is_empty() {
        return member.name.clone();
    }
    member
        .peer_urls
        .first()
        .and_then(|url| planner::ordinal_of(cluster, url))
        .map(|ordinal| cluster.member_name(ordinal))
        .unwrap_or_default()
}

/// A cluster ID as etcdctl prints it: lower-case hex; 0 means not reported.
fn cluster_id(id: u64) -> Option<String> {
    (id != 0).then(|| format!("{id:x}"))
}
