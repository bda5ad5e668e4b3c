//! How long this member has been connected to each other member without a
//! break: etcd's `ActiveSince`, which its strict reconfiguration checks
//! use (a voter counts as up only once connected for 5 s). Fed by every
//! call to a peer (raft messages, and the pings each member sends every
//! other each second) and by the pings a peer sends here. A member not
//! heard from within [`Liveness::stale_after`] counts as disconnected.
//!
//! It also keeps when this member last heard from its leader, which a
//! restarted member asks of the others before it campaigns (pre-vote).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a connection to a member started, and when it last showed life.
#[derive(Debug, Clone, Copy)]
struct Activity {
    since: Instant,
    last_ok: Instant,
    /// The member process's incarnation, 0 while unknown.
    incarnation: u64,
}

/// This process's incarnation: drawn once, at its first use (at start),
/// never 0. Sent with every raft message and ping.
pub fn incarnation() -> u64 {
    static DRAWN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *DRAWN.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mixed = (now ^ u64::from(std::process::id()).rotate_left(32))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        mixed.max(1)
    })
}

/// The connections of this member to the others.
#[derive(Debug)]
pub struct Liveness {
    stale_after: Duration,
    members: Mutex<HashMap<u64, Activity>>,
    /// The leader whose entries this member last accepted, and when.
    leader: Mutex<Option<(u64, Instant)>>,
}

impl Liveness {
    /// Members not heard from for `stale_after` count as disconnected.
    pub fn new(stale_after: Duration) -> Self {
        Liveness {
            stale_after,
            members: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
        }
    }

    /// How long a member may be silent and still count as connected.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// `member` answered (or asked) at `now`.
    pub fn record_ok(&self, member: u64, now: Instant) {
        self.record_ok_as(member, 0, now);
    }

    /// `member`, in its process `incarnation` (0: not told), answered (or
    /// asked) at `now`. A new incarnation is a restart: the connection
    /// starts anew.
    pub fn record_ok_as(&self, member: u64, incarnation: u64, now: Instant) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let stale_after = self.stale_after;
        members
            .entry(member)
            .and_modify(|a| {
                let restarted =
                    incarnation != 0 && a.incarnation != 0 && a.incarnation != incarnation;
                if restarted || now.saturating_duration_since(a.last_ok) > stale_after {
                    a.since = now;
                }
                if incarnation != 0 {
                    a.incarnation = incarnation;
                }
                a.last_ok = a.last_ok.max(now);
            })
            .or_insert(Activity {
                since: now,
                last_ok: now,
                incarnation,
            });
    }

    /// A call to `member` failed without an answer: the connection broke.
    pub fn record_failure(&self, member: u64) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.remove(&member);
    }

    /// Whether `member` answered (or asked) within `within` before `now`.
    pub fn heard_within(&self, member: u64, now: Instant, within: Duration) -> bool {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .get(&member)
            .is_some_and(|a| now.saturating_duration_since(a.last_ok) <= within)
    }

    /// This member accepted entries (or a heartbeat) from `leader` at `now`.
    pub fn record_leader(&self, leader: u64, now: Instant) {
        let mut seen = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if seen.is_none_or(|(_, at)| at <= now) {
            *seen = Some((leader, now));
        }
    }

    /// The leader this member heard from within `within` before `now`.
    pub fn leader_heard_within(&self, now: Instant, within: Duration) -> Option<u64> {
        let seen = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        seen.filter(|(_, at)| now.saturating_duration_since(*at) <= within)
            .map(|(leader, _)| leader)
    }

    /// The leader whose entries this member last accepted, and when.
    pub fn last_leader(&self) -> Option<(u64, Instant)> {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Since when `member` has been connected without a break, as of
    /// `now`; None when it is not connected.
    pub fn connected_since(&self, member: u64, now: Instant) -> Option<Instant> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let a = members.get(&member)?;
        (now.saturating_duration_since(a.last_ok) <= self.stale_after).then_some(a.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_connected_from_its_first_answer_until_a_failure_or_silence() {
        let l = Liveness::new(Duration::from_secs(3));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(l.connected_since(7, t0), None);
        l.record_ok(7, at(0));
        l.record_ok(7, at(2));
        l.record_ok(7, at(4));
        assert_eq!(l.connected_since(7, at(6)), Some(at(0)));
        // Silent for longer than 3 s: not connected, and a new answer
        // starts a new connection.
        assert_eq!(l.connected_since(7, at(8)), None);
        l.record_ok(7, at(8));
        assert_eq!(l.connected_since(7, at(9)), Some(at(8)));
        // A failed call breaks it at once.
        l.record_failure(7);
        assert_eq!(l.connected_since(7, at(9)), None);
        l.record_ok(7, at(10));
        assert_eq!(l.connected_since(7, at(10)), Some(at(10)));
        // Other members are apart.
        assert_eq!(l.connected_since(8, at(10)), None);
    }

    #[test]
    fn a_new_incarnation_starts_the_connection_anew() {
        let l = Liveness::new(Duration::from_secs(3));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        l.record_ok_as(7, 11, at(0));
        l.record_ok_as(7, 11, at(2));
        // Answers without an incarnation (an earlier version) change
        // nothing.
        l.record_ok(7, at(3));
        assert_eq!(l.connected_since(7, at(4)), Some(at(0)));
        // Restarted between two calls, none of which failed.
        l.record_ok_as(7, 12, at(4));
        assert_eq!(l.connected_since(7, at(5)), Some(at(4)));
        l.record_ok_as(7, 12, at(6));
        assert_eq!(l.connected_since(7, at(7)), Some(at(4)));
        assert_ne!(incarnation(), 0);
        assert_eq!(incarnation(), incarnation());
    }

    #[test]
    fn the_leader_counts_as_heard_only_within_the_window() {
        let l = Liveness::new(Duration::from_secs(3));
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let window = Duration::from_millis(1000);
        assert_eq!(l.leader_heard_within(t0, window), None);
        l.record_leader(5, ms(100));
        assert_eq!(l.leader_heard_within(ms(1100), window), Some(5));
        assert_eq!(l.leader_heard_within(ms(1101), window), None);
        // A newer leader replaces it; a late record of the old one does not.
        l.record_leader(6, ms(2000));
        l.record_leader(5, ms(1500));
        assert_eq!(l.leader_heard_within(ms(2500), window), Some(6));
        // Any other member: heard within a window of its own.
        l.record_ok(9, ms(2000));
        assert!(l.heard_within(9, ms(2900), Duration::from_millis(900)));
        assert!(!l.heard_within(9, ms(2901), Duration::from_millis(900)));
        assert!(!l.heard_within(8, ms(2000), window));
    }

    #[test]
    fn answers_recorded_out_of_order_do_not_move_the_last_one_back() {
        let l = Liveness::new(Duration::from_secs(3));
        let t0 = Instant::now();
        l.record_ok(1, t0 + Duration::from_secs(5));
        l.record_ok(1, t0 + Duration::from_secs(1));
        assert_eq!(
            l.connected_since(1, t0 + Duration::from_secs(7)),
            Some(t0 + Duration::from_secs(5))
        );
    }
}
