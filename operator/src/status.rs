//! From a plan's [`Progress`] to the status the user sees: `phase` and the
//! Available, Progressing and Degraded conditions, following the Kubernetes
//! convention that `lastTransitionTime` moves only when `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::Phase;
use crate::planner::Progress;

/// Condition type: the cluster has quorum and serves clients.
pub const AVAILABLE: &str = "Available";
/// Condition type: the operator is changing the cluster towards its spec.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something needs attention.
pub const DEGRADED: &str = "Degraded";
/// Condition type: a TLS cluster's certificates exist and are current.
pub const CERTIFICATES_READY: &str = "CertificatesReady";

/// Condition type: pods are being moved onto a new revision (image, flags).
pub const UPGRADING: &str = "Upgrading";
/// Whether a majority of the voters has been unreachable (see `recovery`).
pub const QUORUM_LOST: &str = "QuorumLost";
/// Whether a quorum-loss recovery (`spec.recovery`) is under way.
pub const RECOVERING: &str = "Recovering";
/// Condition type: TLS is being turned on for a running cluster.
pub const ENABLING_TLS: &str = "EnablingTLS";
/// Condition type: member volumes grow to a larger `spec.storage.size`
/// (True while they do; False once done, or when the size cannot be had).
pub const VOLUME_EXPANSION: &str = "VolumeExpansion";

/// Inputs besides the plan's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    /// Whether the store answered the member list (it does only with quorum).
    pub store_answered: bool,
    /// `metadata.generation` of the spec that was planned for.
    pub generation: Option<i64>,
    /// Phase reported before this reconcile.
    pub previous_phase: Option<Phase>,
    /// Conditions reported before this reconcile.
    pub previous_conditions: &'a [Condition],
}

/// The phase and conditions to report for `progress`.
pub fn summarize(
    progress: &Progress,
    seen: &Observation<'_>,
    now: &Time,
) -> (Phase, Vec<Condition>) {
    let still_creating = matches!(seen.previous_phase, None | Some(Phase::Creating));
    let phase = phase(progress, still_creating);
    let available = if seen.store_answered {
        state(
            true,
            "QuorumAvailable",
            "the store answers with quorum".into(),
        )
    } else if phase == Phase::Creating {
        state(false, "Bootstrapping", "members are starting".into())
    } else {
        state(
            false,
            "QuorumUnavailable",
            "the store does not answer".into(),
        )
    };
    let progressing = match progress {
        Progress::Bootstrapping => state(true, "Bootstrapping", "creating objects".into()),
        Progress::AddingMember(o) => state(
            true,
            "AddingMember",
            format!("adding member {o} as a learner"),
        ),
        Progress::WaitingForLearner(o) => state(
            true,
            "WaitingForLearner",
            format!("member {o} is catching up"),
        ),
        Progress::PromotingMember(o) => {
            state(true, "PromotingMember", format!("promoting member {o}"))
        }
        Progress::RemovingMember(o) => {
            state(true, "RemovingMember", format!("removing member {o}"))
        }
        Progress::ReplacingMember(o) => state(
            true,
            "ReplacingMember",
            format!("member {o} lost its data and is being replaced"),
        ),
        Progress::StoreUnreachable if phase == Phase::Creating => state(
            true,
            "Bootstrapping",
            "waiting for members to form a quorum".into(),
        ),
        Progress::StoreUnreachable => state(
            false,
            "QuorumUnavailable",
            "membership changes wait for quorum".into(),
        ),
        Progress::Paused => state(false, "Paused", "spec.paused is true".into()),
        Progress::InvalidSpec(e) => state(false, "InvalidSpec", e.to_string()),
        Progress::QuorumAtRisk => state(
            false,
            "QuorumAtRisk",
            "the next step would cost quorum".into(),
        ),
        Progress::Degraded => state(
            false,
            "WaitingForHealthyMembers",
            "some members are unhealthy".into(),
        ),
        Progress::Stable => state(
            false,
            "ReconcileComplete",
            "the cluster matches its spec".into(),
        ),
    };
    let degraded = match progress {
        Progress::InvalidSpec(e) => state(true, "InvalidSpec", e.to_string()),
        Progress::QuorumAtRisk => state(
            true,
            "QuorumAtRisk",
            "a member is down and the next step would cost quorum".into(),
        ),
        Progress::Degraded => state(
            true,
            "UnhealthyMembers",
            "some members are unhealthy".into(),
        ),
        Progress::StoreUnreachable if phase != Phase::Creating => state(
            true,
            "QuorumUnavailable",
            "the store does not answer".into(),
        ),
        _ => state(false, "AsExpected", "no problems found".into()),
    };
    let conditions = [
        (AVAILABLE, available),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ]
    .into_iter()
    .map(|(type_, s)| condition(type_, s, seen, now))
    .collect();
    (phase, conditions)
}

/// The `CertificatesReady` condition: true, or false with `problem`'s
/// reason and message.
pub fn certificates_ready(
    problem: Option<(&'static str, &str)>,
    generation: Option<i64>,
    previous_conditions: &[Condition],
    now: &Time,
) -> Condition {
    let state = match problem {
        None => state(
            true,
            "Issued",
            "certificates are present and current".into(),
        ),
        Some((reason, message)) => state(false, reason, message.to_string()),
    };
    let seen = Observation {
        store_answered: false,
        generation,
        previous_phase: None,
        previous_conditions,
    };
    condition(CERTIFICATES_READY, state, &seen, now)
}

/// The `Upgrading` condition: `status` with `reason` and `message`.
pub fn upgrading(
    status: bool,
    reason: &'static str,
    message: String,
    generation: Option<i64>,
    previous_conditions: &[Condition],
    now: &Time,
) -> Condition {
    condition_of(
        UPGRADING,
        status,
        reason,
        message,
        generation,
        previous_conditions,
        now,
    )
}

/// A condition of `type_` with `status`, `reason` and `message`, keeping
/// the previous transition time while its status is unchanged.
pub fn condition_of(
    type_: &str,
    status: bool,
    reason: &'static str,
    message: String,
    generation: Option<i64>,
    previous_conditions: &[Condition],
    now: &Time,
) -> Condition {
    let seen = Observation {
        store_answered: false,
        generation,
        previous_phase: None,
        previous_conditions,
    };
    condition(type_, state(status, reason, message), &seen, now)
}

struct State {
    status: bool,
    reason: &'static str,
    message: String,
}

fn state(status: bool, reason: &'static str, message: String) -> State {
    State {
        status,
        reason,
        message,
    }
}

fn phase(progress: &Progress, still_creating: bool) -> Phase {
    match progress {
        Progress::Paused => Phase::Paused,
        Progress::InvalidSpec(_) => Phase::Failed,
        Progress::Bootstrapping => Phase::Creating,
        Progress::StoreUnreachable if still_creating => Phase::Creating,
        Progress::StoreUnreachable => Phase::Failed,
        Progress::AddingMember(_)
        | Progress::WaitingForLearner(_)
        | Progress::PromotingMember(_)
        | Progress::RemovingMember(_)
        | Progress::ReplacingMember(_) => Phase::Scaling,
        Progress::QuorumAtRisk | Progress::Degraded => Phase::Degraded,
        Progress::Stable => Phase::Running,
    }
}

fn condition(type_: &str, state: State, seen: &Observation<'_>, now: &Time) -> Condition {
    let status = if state.status { "True" } else { "False" }.to_string();
    let last_transition_time = seen
        .previous_conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: state.reason.to_string(),
        message: state.message,
        observed_generation: seen.generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::crd::SpecError;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn running() -> Observation<'static> {
        Observation {
            store_answered: true,
            generation: Some(4),
            previous_phase: Some(Phase::Running),
            previous_conditions: &[],
        }
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn stable_cluster_is_running_available_and_not_degraded() {
        let (phase, conditions) = summarize(&Progress::Stable, &running(), &at(10));
        assert_eq!(phase, Phase::Running);
        assert_eq!(find(&conditions, AVAILABLE).status, "True");
        assert_eq!(find(&conditions, PROGRESSING).status, "False");
        assert_eq!(find(&conditions, DEGRADED).status, "False");
        assert!(conditions.iter().all(|c| c.observed_generation == Some(4)));
    }

    #[test]
    fn invalid_spec_sets_degraded_with_the_validation_error() {
        let progress = Progress::InvalidSpec(SpecError::UnknownOption("foo".into()));
        let (phase, conditions) = summarize(&progress, &running(), &at(10));
        assert_eq!(phase, Phase::Failed);
        let degraded = find(&conditions, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(degraded.message.contains("\"foo\""));
        assert_eq!(find(&conditions, PROGRESSING).status, "False");
    }

    #[test]
    fn scaling_step_is_progressing() {
        let (phase, conditions) = summarize(&Progress::AddingMember(3), &running(), &at(10));
        assert_eq!(phase, Phase::Scaling);
        let progressing = find(&conditions, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "AddingMember")
        );
    }

    #[test]
    fn unreachable_store_while_creating_is_bootstrapping_not_failed() {
        let seen = Observation {
            store_answered: false,
            previous_phase: Some(Phase::Creating),
            ..running()
        };
        let (phase, conditions) = summarize(&Progress::StoreUnreachable, &seen, &at(10));
        assert_eq!(phase, Phase::Creating);
        assert_eq!(find(&conditions, DEGRADED).status, "False");
        assert_eq!(find(&conditions, AVAILABLE).reason, "Bootstrapping");
    }

    #[test]
    fn unreachable_store_after_running_is_failed_and_degraded() {
        let seen = Observation {
            store_answered: false,
            ..running()
        };
        let (phase, conditions) = summarize(&Progress::StoreUnreachable, &seen, &at(10));
        assert_eq!(phase, Phase::Failed);
        assert_eq!(find(&conditions, AVAILABLE).status, "False");
        assert_eq!(find(&conditions, DEGRADED).status, "True");
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let (_, first) = summarize(&Progress::Stable, &running(), &at(10));
        let seen = Observation {
            previous_conditions: &first,
            ..running()
        };
        let (_, second) = summarize(&Progress::AddingMember(3), &seen, &at(20));
        assert_eq!(find(&second, AVAILABLE).last_transition_time, at(10));
        assert_eq!(find(&second, PROGRESSING).last_transition_time, at(20));
    }

    #[test]
    fn paused_cluster_reports_paused() {
        let (phase, conditions) = summarize(&Progress::Paused, &running(), &at(10));
        assert_eq!(phase, Phase::Paused);
        assert_eq!(find(&conditions, PROGRESSING).reason, "Paused");
    }
}
