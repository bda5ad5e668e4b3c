//! Election timing: etcd's `--heartbeat-interval` and `--election-timeout`
//! mapped onto openraft 0.9, which has neither pre-vote nor check-quorum.
//!
//! openraft lets a follower that had a leader campaign only once the
//! leader has been silent for `election_timeout_max` (its leader lease,
//! during which every voter also refuses to vote) plus the follower's own
//! random timeout in `[election_timeout_min, election_timeout_max)`. With
//! etcd's timeout as the maximum and half of it as the minimum, a follower
//! campaigns 1.5 to 2 election timeouts after the leader's last message
//! and every voter grants the vote (etcd: 1 to 2 timeouts, then pre-vote).
//! The doubled window ferrocd used before made failover take 3 to 4.
//!
//! With `--pre-vote` (the default) openraft's timer is off and every
//! campaign comes from [`crate::api::failover`]: once the leader has been
//! silent for its lease (or, on a member that has heard no leader since it
//! started, for one election timeout from the start), plus a random part
//! of a quarter timeout, the member asks the voters and campaigns only if
//! a quorum, itself included, reports no live leader. So a follower cut
//! off from a leader the others still hear, or a restarted member the
//! leader has not reached yet (a Kubernetes pod whose new address is not
//! yet in DNS), never raises the term and deposes it; and after a crash of
//! the leader a follower campaigns 1 to 1.25 timeouts after its last
//! message instead of 1.5 to 2.
//!
//! Without pre-vote, openraft's timer runs, and a member without a
//! leader's committed vote (every member just after a restart: its vote is
//! stored as not committed) would campaign after its random timeout alone,
//! before the leader reaches it; so a restarted member of a cluster with
//! other voters holds its campaigns until it hears of a leader or one
//! election timeout plus a random part of another has passed.

use std::time::Duration;

use super::Raft;

/// openraft's `(election_timeout_min, election_timeout_max)` in ms for
/// etcd's election timeout and heartbeat interval (the minimum stays above
/// the heartbeat interval, as openraft requires).
pub fn timeouts(election_ms: u64, heartbeat_ms: u64) -> (u64, u64) {
    let max = election_ms;
    let min = (election_ms / 2).max(heartbeat_ms + 1).min(max - 1);
    (min, max)
}

/// How long a restarted member holds its first campaign back unless it
/// hears of a leader: one election timeout plus up to half of another,
/// drawn from `seed`, so members restarted together do not all campaign at
/// once.
pub fn restart_hold(election_ms: u64, seed: u64) -> Duration {
    let spread = (election_ms / 2).max(1);
    Duration::from_millis(election_ms + seed % spread)
}

/// Holds elections off on a restarted member until it hears of a leader
/// (other than itself) or `hold` passes (without `--pre-vote`: with it,
/// the failover task asks the voters before every campaign).
pub fn hold_after_restart(raft: &Raft, hold: Duration) {
    raft.runtime_config().elect(false);
    let raft = raft.clone();
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let me = metrics.borrow().id;
        let heard = metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != me));
        let _ = tokio::time::timeout(hold, heard).await;
        raft.runtime_config().elect(true);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_defaults_give_a_window_of_one_and_a_half_to_two_timeouts() {
        let (min, max) = timeouts(1000, 100);
        assert_eq!((min, max), (500, 1000));
        // openraft: lease (max) plus a random timeout in [min, max).
        assert_eq!((max + min, max + max), (1500, 2000));
    }

    #[test]
    fn the_minimum_stays_above_the_heartbeat_and_below_the_maximum() {
        // etcd's smallest election timeout: five heartbeats.
        assert_eq!(timeouts(500, 100), (250, 500));
        assert_eq!(timeouts(50, 10), (25, 50));
        assert_eq!(timeouts(5, 1), (2, 5));
        let (min, max) = timeouts(10, 2);
        assert!(min > 2 && min < max);
    }

    #[test]
    fn the_restart_hold_is_one_to_one_and_a_half_timeouts() {
        for seed in [0, 1, 499, 500, 12345, u64::MAX] {
            let hold = restart_hold(1000, seed).as_millis();
            assert!((1000..1500).contains(&hold), "{hold}");
        }
        assert_ne!(restart_hold(1000, 1), restart_hold(1000, 2));
    }
}
