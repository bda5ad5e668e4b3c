//! The rollout planner: a pure function from the members and their pods to
//! the one step that moves the cluster onto the StatefulSet's update
//! revision (a new image, new flags).
//!
//! The StatefulSet uses `updateStrategy: OnDelete`, so Kubernetes never
//! restarts a member on its own: the operator deletes one pod at a time and
//! the StatefulSet controller re-creates it from the new template. A pod is
//! deleted only when every member is healthy, ready and caught up with the
//! leader; followers go first, highest ordinal first, and the leader last,
//! after leadership moved to a member already on the new revision. A pod on
//! the new revision that crash-loops or never becomes ready stops the
//! rollout: no further member is touched.

use std::time::Duration;

/// Entries a member's applied index may trail the leader's last index and
/// still count as caught up for a restart. Small against the log a member
/// replays, large against what a busy cluster commits between two status
/// calls.
pub const MAX_LAG: u64 = 1000;
/// Restarts of a pod on the new revision after which the rollout stops.
pub const FAILED_RESTARTS: i32 = 2;
/// How long a pod on the new revision may take to become ready before the
/// rollout stops.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The bounds of a rollout: `spec.rollout`, the constants above by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// How long a pod on the new revision may take to become ready.
    pub ready_timeout: Duration,
    /// Entries a member may trail the leader and count as caught up.
    pub max_lag: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            ready_timeout: READY_TIMEOUT,
            max_lag: MAX_LAG,
        }
    }
}

/// A member pod as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    /// Whether it runs the StatefulSet's update revision.
    pub updated: bool,
    /// Whether its Ready condition is true.
    pub ready: bool,
    /// Whether it is being deleted.
    pub terminating: bool,
    /// Restarts of the ferrocd container.
    pub restarts: i32,
    /// How long ago the pod was created.
    pub age: Duration,
}

/// One member of the store with its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutMember {
    /// StatefulSet ordinal of the member's pod.
    pub ordinal: i32,
    /// Member ID.
    pub id: u64,
    /// Whether it is the raft leader.
    pub is_leader: bool,
    /// Whether it is a learner.
    pub is_learner: bool,
    /// Entries its applied index trails the leader's last index; `None`
    /// when it did not answer a status request.
    pub lag: Option<u64>,
    /// Its pod; `None` when there is none.
    pub pod: Option<PodState>,
}

impl RolloutMember {
    fn outdated(&self) -> bool {
        self.pod.as_ref().is_some_and(|p| !p.updated)
    }

    fn updated(&self) -> bool {
        self.pod.as_ref().is_some_and(|p| p.updated)
    }

    /// Why it can not take part in a restart now, if it can not.
    fn unfit(&self, bounds: &Bounds) -> Option<Unfit> {
        let Some(pod) = &self.pod else {
            return Some(Unfit::NoPod);
        };
        if pod.terminating {
            return Some(Unfit::Terminating);
        }
        if !pod.ready {
            return Some(Unfit::NotReady);
        }
        match self.lag {
            None => Some(Unfit::Unhealthy),
            Some(lag) if lag > bounds.max_lag => Some(Unfit::Lagging(lag)),
            Some(_) if self.is_learner => Some(Unfit::Learner),
            Some(_) => None,
        }
    }
}

/// Why a member holds the rollout back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Its pod does not exist (yet).
    NoPod,
    /// Its pod is being deleted.
    Terminating,
    /// Its pod is not ready.
    NotReady,
    /// It does not answer a status request.
    Unhealthy,
    /// It trails the leader by this many entries.
    Lagging(u64),
    /// It is a learner: a membership change is under way.
    Learner,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoPod => write!(f, "has no pod"),
            Self::Terminating => write!(f, "is terminating"),
            Self::NotReady => write!(f, "is not ready"),
            Self::Unhealthy => write!(f, "does not answer"),
            Self::Lagging(lag) => write!(f, "trails the leader by {lag} entries"),
            Self::Learner => write!(f, "is a learner"),
        }
    }
}

/// Why a pod on the new revision stopped the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It restarted this many times.
    CrashLooping(i32),
    /// It was not ready this long after its creation.
    NotReadyInTime(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CrashLooping(restarts) => write!(f, "crash-looping ({restarts} restarts)"),
            Self::NotReadyInTime(age) => write!(f, "not ready {}s after its start", age.as_secs()),
        }
    }
}

/// The rollout's next step, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every member's pod runs the update revision.
    UpToDate,
    /// The StatefulSet controller has not yet seen the latest template, so
    /// which pods are outdated is not known yet.
    Observing,
    /// Outdated pods remain; the member at this ordinal holds them back.
    Waiting(i32, Unfit),
    /// Delete the pod at this ordinal: it comes back on the new revision.
    Restart(i32),
    /// Hand leadership from the outdated leader to an updated voter first.
    MoveLeader {
        /// Ordinal of the leader.
        from: i32,
        /// Member ID of the new leader.
        to: u64,
        /// Its ordinal.
        to_ordinal: i32,
    },
    /// The pod at this ordinal, on the new revision, failed: stop.
    Failed(i32, Failure),
}

/// Members whose pods run the update revision, of all members with a pod.
pub fn progress(members: &[RolloutMember]) -> (usize, usize) {
    let updated = members.iter().filter(|m| m.updated()).count();
    let with_pod = members.iter().filter(|m| m.pod.is_some()).count();
    (updated, with_pod)
}

/// The next rollout step for `members` within the default [`Bounds`].
/// `revision_observed`: the StatefulSet controller has observed the
/// StatefulSet's latest generation.
pub fn plan(members: &[RolloutMember], revision_observed: bool) -> Rollout {
    plan_within(members, revision_observed, &Bounds::default())
}

/// [`plan`] within `bounds`.
pub fn plan_within(members: &[RolloutMember], revision_observed: bool, bounds: &Bounds) -> Rollout {
    if !revision_observed {
        return Rollout::Observing;
    }
    if !members.iter().any(RolloutMember::outdated) {
        return Rollout::UpToDate;
    }
    if let Some((ordinal, failure)) = members
        .iter()
        .find_map(|m| Some((m.ordinal, failed(m, bounds)?)))
    {
        return Rollout::Failed(ordinal, failure);
    }
    let unfit: Vec<(&RolloutMember, Unfit)> = members
        .iter()
        .filter_map(|m| Some((m, m.unfit(bounds)?)))
        .collect();
    match unfit.as_slice() {
        [] => {}
        // A member that is down anyway and still on the old revision can
        // be restarted onto the new one without costing anything more: this
        // is how a rollback reaches a pod left broken by a failed rollout.
        [(member, Unfit::NotReady | Unfit::Unhealthy)]
            if member.outdated() && !member.is_learner && !member.is_leader =>
        {
            return Rollout::Restart(member.ordinal);
        }
        [(member, why), ..] => return Rollout::Waiting(member.ordinal, *why),
    }
    let mut outdated: Vec<&RolloutMember> = members.iter().filter(|m| m.outdated()).collect();
    outdated.sort_by_key(|m| std::cmp::Reverse(m.ordinal));
    if let Some(follower) = outdated.iter().find(|m| !m.is_leader) {
        return Rollout::Restart(follower.ordinal);
    }
    let leader = outdated[0];
    let successor = members
        .iter()
        .filter(|m| m.updated() && !m.is_learner && m.id != leader.id)
        .min_by_key(|m| (m.lag, m.ordinal));
    match successor {
        Some(to) => Rollout::MoveLeader {
            from: leader.ordinal,
            to: to.id,
            to_ordinal: to.ordinal,
        },
        // A single member: its restart is an outage no step can avoid.
        None => Rollout::Restart(leader.ordinal),
    }
}

/// Whether `member`'s pod runs the new revision and has failed on it.
fn failed(member: &RolloutMember, bounds: &Bounds) -> Option<Failure> {
    let pod = member
        .pod
        .as_ref()
        .filter(|p| p.updated && !p.terminating)?;
    if pod.restarts >= FAILED_RESTARTS && !pod.ready {
        return Some(Failure::CrashLooping(pod.restarts));
    }
    if !pod.ready && pod.age > bounds.ready_timeout {
        return Some(Failure::NotReadyInTime(pod.age));
    }
    None
}

#[cfg(test)]
mod tests;
