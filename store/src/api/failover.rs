//! Campaigns as soon as a silent leader's lease has run out, instead of
//! waiting for openraft's own election timer.
//!
//! openraft 0.9 has every voter refuse votes for its leader lease (the
//! election timeout) after the leader's last message, and a follower
//! campaign only after that lease plus its random timeout: 1.5 to 2
//! election timeouts of silence (see [`crate::raft::elections`]). etcd
//! campaigns after 1 to 2. This task, on every voter that follows a
//! leader, watches when the leader was last heard from; once that is one
//! election timeout plus a random part of a quarter of one ago (the
//! voters' leases have run out, and followers rarely campaign together),
//! it asks the voters whether a quorum still has a live leader or a newer
//! log than its own (etcd's pre-vote, [`super::liveness::prevote`], with
//! `--pre-vote`) and, if neither, has openraft campaign at once. A
//! follower cut off from a leader the others still hear never gets a
//! quorum's agreement, so it cannot raise the term and depose that
//! leader; a follower behind the others leaves the campaign to one that
//! can win it (openraft does not raise a voter's term on a vote it
//! refuses, so two members that kept campaigning in turn, the one behind
//! first, could each refuse the other forever).
//!
//! With `--pre-vote` this task alone starts campaigns (openraft's timer is
//! off); a campaign that fails (two followers at once) is followed by
//! another after a random pause of a quarter to a half election timeout.
//! Without it, openraft's timer runs too.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::watch;
use tracing::info;

use super::Context;

/// When campaigns started here are held off (a leadership transfer picks
/// its own candidate), shared by the tasks that hold them.
#[derive(Debug, Default)]
pub struct CampaignHold {
    until: Mutex<Option<Instant>>,
}

impl CampaignHold {
    /// Holds campaigns until `until` (a later hold wins).
    pub fn hold_until(&self, until: Instant) {
        let mut held = self.until.lock().unwrap_or_else(|e| e.into_inner());
        *held = Some(held.map_or(until, |h| h.max(until)));
    }

    /// Ends the hold.
    pub fn release(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether campaigns are held at `now`.
    pub fn held(&self, now: Instant) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| now < until)
    }
}

/// When this member campaigns after hearing from its leader at `heard`:
/// once the voters' lease on that leader (`election`) has run out, plus
/// `jitter` (drawn from `[heartbeat / 2, election / 4)`).
pub fn due(heard: Instant, election: Duration, jitter: Duration) -> Instant {
    heard + election + jitter
}

/// A random part of `[heartbeat / 2, election / 4)` (at least 1 ms wide),
/// from `rng`.
pub fn jitter(rng: &mut u64, election: Duration, heartbeat: Duration) -> Duration {
    // xorshift64
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let low = heartbeat.as_millis() as u64 / 2;
    let high = (election.as_millis() as u64 / 4).max(low + 1);
    Duration::from_millis(low + *rng % (high - low))
}

/// Watches the leader's silence on this member until `stop` (see the
/// module doc).
pub async fn watch_leader(ctx: Context, mut stop: watch::Receiver<bool>) {
    let me = ctx.config().member_id;
    let election = Duration::from_millis(ctx.config().election_timeout_ms);
    let heartbeat = Duration::from_millis(ctx.config().heartbeat_interval_ms.max(1));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = (me ^ seed) | 1;
    let mut wait = jitter(&mut rng, election, heartbeat);
    let started = Instant::now();
    loop {
        let now = Instant::now();
        let next = match campaign_due(&ctx, me, started, now, election, wait) {
            Some(at) if at <= now => None,
            Some(at) => Some(at.min(now + election)),
            None => Some(now + heartbeat),
        };
        if let Some(at) = next {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let leader = ctx.leader().map(|(id, _)| id);
        if !ctx.config().pre_vote || super::liveness::prevote(&ctx).await {
            // Heard from again while asking: nothing to do.
            if campaign_due(&ctx, me, started, Instant::now(), election, wait)
                .is_some_and(|at| at <= Instant::now())
            {
                info!(
                    leader = %format!("{:x}", leader.unwrap_or(0)),
                    "leader silent past its lease; campaigning"
                );
                if ctx.raft().trigger().elect().await.is_err() {
                    return;
                }
                // The campaign ends with a leader, or gives way to the next.
                let mut metrics = ctx.raft().metrics();
                let changed =
                    metrics.wait_for(|m| m.current_leader.is_some_and(|l| Some(l) != leader));
                tokio::select! {
                    _ = tokio::time::timeout(election / 2, changed) => {}
                    _ = stop.changed() => return,
                }
            }
        }
        // Asked again after a random pause: two members whose campaigns
        // keep failing each other do not stay in step.
        wait = jitter(&mut rng, election, heartbeat);
        tokio::select! {
            _ = tokio::time::sleep(election / 4 + wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// When this member should campaign, counting from the last word of its
/// leader, or from `started` if it has heard none since: at once when it
/// is the only voter; None when it should not (it leads, is not a voter,
/// or a leadership transfer holds campaigns).
fn campaign_due(
    ctx: &Context,
    me: u64,
    started: Instant,
    now: Instant,
    election: Duration,
    jitter: Duration,
) -> Option<Instant> {
    if ctx.campaign_hold().held(now) {
        return None;
    }
    {
        let m = ctx.raft().metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        if m.state == ServerState::Leader || !membership.voter_ids().any(|id| id == me) {
            return None;
        }
        if membership.voter_ids().eq([me]) {
            return Some(now);
        }
    }
    let heard = match ctx.peers().liveness().last_leader() {
        Some((_, heard)) => heard.max(started),
        None => started,
    };
    Some(due(heard, election, jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_campaigns_after_the_lease_plus_a_jitter_below_a_quarter_timeout() {
        let (election, heartbeat) = (Duration::from_millis(1000), Duration::from_millis(100));
        let mut rng = 12345;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let j = jitter(&mut rng, election, heartbeat);
            assert!(
                j >= Duration::from_millis(50) && j < Duration::from_millis(250),
                "{j:?}"
            );
            seen.insert(j);
        }
        // Spread out, so two followers rarely campaign together.
        assert!(seen.len() > 100, "{}", seen.len());
        let t0 = Instant::now();
        assert_eq!(
            due(t0, election, Duration::from_millis(70)),
            t0 + Duration::from_millis(1070)
        );
        // Tiny timeouts still give a window.
        let j = jitter(&mut rng, Duration::from_millis(5), Duration::from_millis(1));
        assert!(j < Duration::from_millis(2), "{j:?}");
    }

    #[test]
    fn a_hold_covers_campaigns_until_it_ends_or_is_released() {
        let hold = CampaignHold::default();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert!(!hold.held(t0));
        hold.hold_until(s(5));
        hold.hold_until(s(3));
        assert!(hold.held(s(4)));
        assert!(!hold.held(s(5)));
        hold.hold_until(s(10));
        hold.release();
        assert!(!hold.held(s(6)));
    }
}
