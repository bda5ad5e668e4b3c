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
//! A member without a leader's committed vote (every member just after a
//! restart: its vote is stored as not committed) campaigns after its
//! random timeout alone. Without pre-vote, a restarted member that
//! campaigns before the leader reaches it would raise the term and depose
//! a healthy leader; so a restarted member of a cluster with other voters
//! does not campaign until it hears of a leader or one election timeout
//! plus a random part of another has passed. Past that, with `--pre-vote`
//! (the default), it campaigns only once a quorum of the voters, itself
//! included, reports no live leader (every member restarted at once, or
//! the leader gone), asking again every quarter election timeout: a leader
//! that has not reached the restarted member yet (a Kubernetes pod whose
//! new address is not yet in DNS) keeps leading.

use std::future::Future;
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
/// (other than itself), or `hold` passes and then `prevote` (asked every
/// `retry`) says a quorum has no live leader.
pub fn hold_after_restart<P, F>(raft: &Raft, hold: Duration, retry: Duration, prevote: P)
where
    P: Fn() -> F + Send + 'static,
    F: Future<Output = bool> + Send,
{
    raft.runtime_config().elect(false);
    let raft = raft.clone();
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let me = metrics.borrow().id;
        let heard = metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != me));
        tokio::pin!(heard);
        if tokio::time::timeout(hold, &mut heard).await.is_err() {
            loop {
                tokio::select! {
                    _ = &mut heard => break,
                    granted = prevote() => if granted { break },
                }
                tokio::select! {
                    _ = &mut heard => break,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
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
