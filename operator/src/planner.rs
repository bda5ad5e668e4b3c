//! The membership planner: a pure function from the spec and what was
//! observed (StatefulSet, PVCs, the store's member list) to the objects to
//! apply and at most one membership step.
//!
//! The StatefulSet always spans exactly the members in the store's member
//! list (highest ordinal + 1). So a scale-up adds a learner first and the
//! StatefulSet grows on the next reconcile; a scale-down removes the member
//! first and the StatefulSet shrinks on the next one. A pod never runs
//! without its member, and a member is never removed while it still counts.

use std::collections::BTreeSet;

use crate::builders::{ClusterRef, InitialClusterState};
use crate::crd::{EtcdClusterSpec, SpecError};
pub use crate::membership::ObservedMember;
use crate::membership::{quorum, MemberStep};

/// What the reconciler saw before planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// `spec.replicas` of the StatefulSet; `None` when it does not exist.
    pub stateful_set_replicas: Option<i32>,
    /// Ordinals whose data PVC exists.
    pub pvcs: BTreeSet<i32>,
    /// Ordinals whose PVC is not the one their member was seen healthy on:
    /// the volume was re-created empty, so the member's data is gone.
    pub replaced_pvcs: BTreeSet<i32>,
    /// The store's member list with health; `None` when the store did not answer.
    pub members: Option<Vec<ObservedMember>>,
}

/// The objects the reconciler should apply, in this order: ConfigMap,
/// Services, StatefulSet, PodDisruptionBudget. The ConfigMap goes before the
/// StatefulSet so a new pod never starts with a stale `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredObjects {
    /// Replicas of the StatefulSet.
    pub replicas: i32,
    /// Contents of the bootstrap ConfigMap; `None`: leave it as it is.
    pub bootstrap: Option<Bootstrap>,
    /// Voters the PodDisruptionBudget is sized for; `None`: leave it as it is.
    pub pdb_voters: Option<i32>,
}

/// `--initial-cluster` (members `0..members`) and `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bootstrap {
    /// Members listed in `--initial-cluster`.
    pub members: i32,
    /// `new` for the first start, `existing` once the cluster has formed.
    pub state: InitialClusterState,
}

/// Where the cluster stands, for status conditions and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `spec.paused`: nothing is changed.
    Paused,
    /// The spec can not be acted on.
    InvalidSpec(SpecError),
    /// Objects are being created; all members start together.
    Bootstrapping,
    /// The store did not answer; membership is left alone.
    StoreUnreachable,
    /// A member is being added at this ordinal.
    AddingMember(i32),
    /// The learner at this ordinal is starting or catching up.
    WaitingForLearner(i32),
    /// The learner at this ordinal is being promoted.
    PromotingMember(i32),
    /// The member at this ordinal is being removed on scale-down.
    RemovingMember(i32),
    /// The member at this ordinal lost its data and is being removed to be re-added.
    ReplacingMember(i32),
    /// A needed step would cost quorum; waiting for members to recover.
    QuorumAtRisk,
    /// Spec reached, but some members are unhealthy.
    Degraded,
    /// Spec reached, all members healthy.
    Stable,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Objects to apply; `None`: touch nothing.
    pub objects: Option<DesiredObjects>,
    /// The one membership step to take now, if any.
    pub step: Option<MemberStep>,
    /// Ordinals whose PVCs to delete: members gone and pods already scaled away.
    pub delete_pvcs: Vec<i32>,
    /// Where the cluster stands.
    pub progress: Progress,
}

/// Plans the next reconcile of `cluster`.
pub fn plan(cluster: &ClusterRef, spec: &EtcdClusterSpec, observed: &Observed) -> Plan {
    if spec.paused {
        return Plan::idle(Progress::Paused);
    }
    if let Err(error) = spec.validate() {
        return Plan::idle(Progress::InvalidSpec(error));
    }
    let Some(sts_replicas) = observed.stateful_set_replicas else {
        return Plan {
            objects: Some(DesiredObjects {
                replicas: spec.replicas,
                bootstrap: Some(Bootstrap {
                    members: spec.replicas,
                    state: InitialClusterState::New,
                }),
                pdb_voters: Some(spec.replicas),
            }),
            step: None,
            delete_pvcs: Vec::new(),
            progress: Progress::Bootstrapping,
        };
    };
    let Some(members) = &observed.members else {
        return Plan {
            objects: Some(DesiredObjects {
                replicas: sts_replicas,
                bootstrap: None,
                pdb_voters: None,
            }),
            step: None,
            delete_pvcs: Vec::new(),
            progress: Progress::StoreUnreachable,
        };
    };
    Membership::new(cluster, members).plan(spec, observed, sts_replicas)
}

impl Plan {
    fn idle(progress: Progress) -> Self {
        Self {
            objects: None,
            step: None,
            delete_pvcs: Vec::new(),
            progress,
        }
    }
}

/// The member list indexed by StatefulSet ordinal.
struct Membership<'a> {
    cluster: &'a ClusterRef,
    members: Vec<(i32, &'a ObservedMember)>,
    voters: usize,
    healthy_voters: usize,
    managed_voters: usize,
    span: i32,
}

impl<'a> Membership<'a> {
    fn new(cluster: &'a ClusterRef, observed: &'a [ObservedMember]) -> Self {
        let mut members: Vec<_> = observed
            .iter()
            .filter_map(|m| ordinal_of(cluster, &m.peer_url).map(|o| (o, m)))
            .collect();
        members.sort_by_key(|(ordinal, _)| *ordinal);
        // Members the operator did not name still vote; count them for quorum.
        let voters = observed.iter().filter(|m| !m.is_learner).count();
        let healthy_voters = observed
            .iter()
            .filter(|m| !m.is_learner && m.healthy)
            .count();
        // Only members the operator named count towards `spec.replicas`.
        let managed_voters = members.iter().filter(|(_, m)| !m.is_learner).count();
        let span = members.last().map_or(0, |(ordinal, _)| ordinal + 1);
        Self {
            cluster,
            members,
            voters,
            healthy_voters,
            managed_voters,
            span,
        }
    }

    fn plan(&self, spec: &EtcdClusterSpec, observed: &Observed, sts_replicas: i32) -> Plan {
        // PVCs of ordinals past both the member list and the running
        // StatefulSet belong to members that are gone and pods that are gone.
        let delete_pvcs: Vec<i32> = observed
            .pvcs
            .iter()
            .copied()
            .filter(|&o| o >= self.span && o >= sts_replicas)
            .collect();
        let (step, progress) = self.next_step(spec, observed, sts_replicas, &delete_pvcs);
        // A lone member on an emptyDir loses its data with its pod: the
        // pod that replaces it can only found the cluster anew (with data
        // on the volume, ferrocd ignores the flag). Any other member that
        // comes back empty would fork the cluster, so it joins.
        let state = if spec.storage.empty_dir.is_some()
            && self.span == 1
            && self.members.len() == 1
            && self.voters == 1
        {
            InitialClusterState::New
        } else {
            InitialClusterState::Existing
        };
        Plan {
            objects: Some(DesiredObjects {
                replicas: self.span,
                bootstrap: Some(Bootstrap {
                    members: self.span,
                    state,
                }),
                pdb_voters: Some(self.voters as i32),
            }),
            step,
            delete_pvcs,
            progress,
        }
    }

    fn next_step(
        &self,
        spec: &EtcdClusterSpec,
        observed: &Observed,
        sts_replicas: i32,
        delete_pvcs: &[i32],
    ) -> (Option<MemberStep>, Progress) {
        let target = spec.replicas as usize;
        if let Some(&(ordinal, learner)) = self.members.iter().find(|(_, m)| m.is_learner) {
            if ordinal >= spec.replicas {
                // Spec shrank while the learner was joining: it is surplus,
                // and removing a learner never touches quorum.
                return (
                    Some(MemberStep::Remove {
                        id: learner.id,
                        ordinal,
                    }),
                    Progress::RemovingMember(ordinal),
                );
            }
            if !(learner.healthy && learner.caught_up) {
                return (None, Progress::WaitingForLearner(ordinal));
            }
            if self.healthy_voters + 1 < quorum(self.voters + 1) {
                return (None, Progress::QuorumAtRisk);
            }
            return (
                Some(MemberStep::Promote {
                    id: learner.id,
                    ordinal,
                }),
                Progress::PromotingMember(ordinal),
            );
        }
        if spec.storage.empty_dir.is_none() {
            if let Some(&(ordinal, lost)) = self.members.iter().find(|(o, _)| {
                *o < sts_replicas
                    && (!observed.pvcs.contains(o) || observed.replaced_pvcs.contains(o))
            }) {
                return self.remove(ordinal, lost, Progress::ReplacingMember(ordinal));
            }
        }
        if let Some(hole) = (0..self.span).find(|o| !self.members.iter().any(|(m, _)| m == o)) {
            return self.add_learner(hole);
        }
        if self.managed_voters < target {
            if self.healthy_voters < self.voters {
                return (None, Progress::Degraded);
            }
            if delete_pvcs.contains(&self.span) {
                // Old data under the new member's name would give it a
                // foreign identity; the PVC goes first.
                return (None, Progress::AddingMember(self.span));
            }
            return self.add_learner(self.span);
        }
        if self.managed_voters > target {
            if let Some(&(ordinal, highest)) = self.members.last() {
                return self.remove(ordinal, highest, Progress::RemovingMember(ordinal));
            }
        }
        if self.healthy_voters < self.voters {
            (None, Progress::Degraded)
        } else {
            (None, Progress::Stable)
        }
    }

    fn add_learner(&self, ordinal: i32) -> (Option<MemberStep>, Progress) {
        (
            Some(MemberStep::AddLearner {
                ordinal,
                peer_url: self.cluster.peer_url(ordinal),
            }),
            Progress::AddingMember(ordinal),
        )
    }

    /// Removes a voter only when the healthy voters left still form a quorum
    /// of the voters left.
    fn remove(
        &self,
        ordinal: i32,
        member: &ObservedMember,
        progress: Progress,
    ) -> (Option<MemberStep>, Progress) {
        let healthy_after = self.healthy_voters - usize::from(member.healthy);
        if healthy_after < quorum(self.voters - 1) {
            return (None, Progress::QuorumAtRisk);
        }
        (
            Some(MemberStep::Remove {
                id: member.id,
                ordinal,
            }),
            progress,
        )
    }
}

/// StatefulSet ordinal of the member with `peer_url`, if the operator named it.
///
/// Parsed from the peer URL, not the member name: etcd lists members that
/// have not started yet with an empty name.
pub(crate) fn ordinal_of(cluster: &ClusterRef, peer_url: &str) -> Option<i32> {
    let (_, rest) = peer_url.split_once("://")?;
    let rest = rest.strip_prefix(&format!("{}-", cluster.name()))?;
    let digits = rest.split('.').next()?;
    let ordinal: i32 = digits.parse().ok()?;
    cluster
        .known_peer_urls(ordinal)
        .iter()
        .any(|url| url == peer_url)
        .then_some(ordinal)
}

#[cfg(test)]
mod tests;
