//! The rollout planner's rules, one scenario per test, and a walk of whole
//! rollouts that checks a restart never costs quorum.

use super::*;

fn pod(updated: bool) -> PodState {
    PodState {
        updated,
        ready: true,
        terminating: false,
        restarts: 0,
        age: Duration::from_secs(600),
    }
}

/// Healthy voters `0..n` on the old revision, member 0 the leader.
fn cluster(n: i32) -> Vec<RolloutMember> {
    (0..n)
        .map(|ordinal| RolloutMember {
            ordinal,
            id: 0x100 + ordinal as u64,
            is_leader: ordinal == 0,
            is_learner: false,
            lag: Some(0),
            pod: Some(pod(false)),
        })
        .collect()
}

fn updated(mut members: Vec<RolloutMember>, ordinals: &[i32]) -> Vec<RolloutMember> {
    for m in &mut members {
        if ordinals.contains(&m.ordinal) {
            m.pod = Some(pod(true));
        }
    }
    members
}

fn with_pod(
    mut members: Vec<RolloutMember>,
    ordinal: i32,
    f: impl FnOnce(&mut PodState),
) -> Vec<RolloutMember> {
    f(members[ordinal as usize].pod.as_mut().unwrap());
    members
}

#[test]
fn cluster_on_the_update_revision_is_up_to_date() {
    assert_eq!(
        plan(&updated(cluster(3), &[0, 1, 2]), true),
        Rollout::UpToDate
    );
}

#[test]
fn nothing_happens_before_the_statefulset_controller_saw_the_template() {
    assert_eq!(plan(&cluster(3), false), Rollout::Observing);
}

#[test]
fn followers_restart_first_highest_ordinal_first() {
    assert_eq!(plan(&cluster(3), true), Rollout::Restart(2));
    assert_eq!(plan(&updated(cluster(3), &[2]), true), Rollout::Restart(1));
}

#[test]
fn leader_last_after_leadership_moved_to_an_updated_member() {
    let members = updated(cluster(3), &[1, 2]);
    assert_eq!(
        plan(&members, true),
        Rollout::MoveLeader {
            from: 0,
            to: 0x101,
            to_ordinal: 1
        }
    );
}

#[test]
fn leadership_goes_to_the_updated_member_closest_to_the_leader() {
    let mut members = updated(cluster(3), &[1, 2]);
    members[1].lag = Some(40);
    members[2].lag = Some(3);
    assert!(matches!(
        plan(&members, true),
        Rollout::MoveLeader { to_ordinal: 2, .. }
    ));
}

#[test]
fn former_leader_restarts_once_it_is_a_follower() {
    let mut members = updated(cluster(3), &[1, 2]);
    members[0].is_leader = false;
    members[1].is_leader = true;
    assert_eq!(plan(&members, true), Rollout::Restart(0));
}

#[test]
fn single_member_restarts_without_a_successor() {
    assert_eq!(plan(&cluster(1), true), Rollout::Restart(0));
}

#[test]
fn new_pod_not_ready_yet_holds_the_next_restart() {
    let members = with_pod(updated(cluster(3), &[2]), 2, |p| {
        p.ready = false;
        p.age = Duration::from_secs(5);
    });
    assert_eq!(plan(&members, true), Rollout::Waiting(2, Unfit::NotReady));
}

#[test]
fn deleted_pod_still_ready_holds_the_next_restart() {
    let members = with_pod(cluster(3), 2, |p| p.terminating = true);
    assert_eq!(
        plan(&members, true),
        Rollout::Waiting(2, Unfit::Terminating)
    );
}

#[test]
fn member_behind_the_leader_holds_the_next_restart() {
    let mut members = updated(cluster(3), &[2]);
    members[2].lag = Some(MAX_LAG + 1);
    assert_eq!(
        plan(&members, true),
        Rollout::Waiting(2, Unfit::Lagging(MAX_LAG + 1))
    );
}

#[test]
fn unhealthy_updated_member_holds_the_next_restart() {
    let mut members = updated(cluster(3), &[2]);
    members[2].lag = None;
    assert_eq!(plan(&members, true), Rollout::Waiting(2, Unfit::Unhealthy));
}

#[test]
fn learner_holds_the_rollout() {
    let mut members = cluster(4);
    members[3].is_learner = true;
    assert_eq!(plan(&members, true), Rollout::Waiting(3, Unfit::Learner));
}

#[test]
fn member_without_a_pod_holds_the_rollout() {
    let mut members = cluster(3);
    members[1].pod = None;
    assert_eq!(plan(&members, true), Rollout::Waiting(1, Unfit::NoPod));
}

#[test]
fn crash_looping_new_pod_stops_the_rollout() {
    let members = with_pod(updated(cluster(3), &[2]), 2, |p| {
        p.ready = false;
        p.restarts = FAILED_RESTARTS;
        p.age = Duration::from_secs(30);
    });
    assert_eq!(
        plan(&members, true),
        Rollout::Failed(2, Failure::CrashLooping(FAILED_RESTARTS))
    );
}

#[test]
fn new_pod_never_ready_stops_the_rollout_after_the_timeout() {
    let late = READY_TIMEOUT + Duration::from_secs(1);
    let members = with_pod(updated(cluster(3), &[2]), 2, |p| {
        p.ready = false;
        p.age = late;
    });
    assert_eq!(
        plan(&members, true),
        Rollout::Failed(2, Failure::NotReadyInTime(late))
    );
}

#[test]
fn old_pod_that_restarted_often_is_no_rollout_failure() {
    let members = with_pod(updated(cluster(3), &[2]), 1, |p| p.restarts = 7);
    assert_eq!(plan(&members, true), Rollout::Restart(1));
}

#[test]
fn broken_pod_left_by_a_failed_rollout_is_restarted_by_a_rollback() {
    // Spec went back to the old image: the broken pod is now the outdated one.
    let mut members = updated(cluster(3), &[0, 1]);
    members[2].lag = None;
    let members = with_pod(members, 2, |p| {
        p.ready = false;
        p.restarts = 4;
    });
    assert_eq!(plan(&members, true), Rollout::Restart(2));
}

#[test]
fn two_members_down_hold_the_rollout_even_when_outdated() {
    let mut members = cluster(5);
    for ordinal in [3, 4] {
        members[ordinal].lag = None;
        members[ordinal].pod.as_mut().unwrap().ready = false;
    }
    assert_eq!(plan(&members, true), Rollout::Waiting(3, Unfit::NotReady));
}

#[test]
fn progress_counts_pods_on_the_update_revision() {
    assert_eq!(progress(&updated(cluster(5), &[3, 4])), (2, 5));
}

/// Walks a rollout of every size to the end, as the StatefulSet controller
/// and raft would answer each step, and checks the rules that matter: one
/// pod down at a time, only with every other member fit, the leader never
/// restarted while another voter exists, and every pod updated at the end.
#[test]
fn every_rollout_ends_updated_with_one_restart_at_a_time_and_the_leader_last() {
    for n in 1..=7 {
        let mut members = cluster(n);
        let mut restarts = Vec::new();
        for _ in 0..3 * n {
            match plan(&members, true) {
                Rollout::Restart(ordinal) => {
                    let member = &members[ordinal as usize];
                    assert!(
                        !member.is_leader || n == 1,
                        "{n} members: leader {ordinal} restarted"
                    );
                    assert!(members
                        .iter()
                        .all(|m| m.unfit(&Bounds::default()).is_none()));
                    restarts.push(ordinal);
                    members[ordinal as usize].pod = Some(pod(true));
                }
                Rollout::MoveLeader {
                    from, to_ordinal, ..
                } => {
                    assert!(members[to_ordinal as usize].updated());
                    members[from as usize].is_leader = false;
                    members[to_ordinal as usize].is_leader = true;
                }
                Rollout::UpToDate => break,
                other => panic!("{n} members: unexpected {other:?}"),
            }
        }
        assert_eq!(plan(&members, true), Rollout::UpToDate, "{n} members");
        let mut sorted = restarts.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "each member once");
        assert_eq!(restarts.last(), Some(&0), "the first leader goes last");
    }
}

#[test]
fn bounds_from_the_spec_replace_the_default_lag_and_ready_timeout() {
    let mut members = cluster(3);
    members[2].lag = Some(200);
    let strict = Bounds {
        ready_timeout: Duration::from_secs(30),
        max_lag: 100,
    };
    assert_eq!(plan(&members, true), Rollout::Restart(2));
    assert_eq!(
        plan_within(&members, true, &strict),
        Rollout::Waiting(2, Unfit::Lagging(200))
    );
    let slow = with_pod(updated(cluster(3), &[2]), 2, |p| {
        p.ready = false;
        p.age = Duration::from_secs(60);
    });
    assert_eq!(
        plan_within(&slow, true, &strict),
        Rollout::Failed(2, Failure::NotReadyInTime(Duration::from_secs(60)))
    );
    assert_eq!(plan(&slow, true), Rollout::Waiting(2, Unfit::NotReady));
}
