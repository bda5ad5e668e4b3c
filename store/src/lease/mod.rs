//! The lessor: which leases exist and with what TTL (changed only by
//! apply, so every member agrees), and when each expires (a local clock
//! reading, consulted only by the leader, which proposes the revoke).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kv::Leases;

/// etcd's largest lease TTL, in seconds.
pub const MAX_TTL: i64 = 9_000_000_000;

/// Metadata name prefix under which lease records are stored.
pub const META_PREFIX: &str = "lease/";

/// The metadata name of lease `id`'s record (its TTL, 8 bytes big-endian).
pub fn meta_name(id: i64) -> String {
    format!("{META_PREFIX}{id:016x}")
}

/// Decodes lease records, stored as metadata under [`META_PREFIX`], into
/// (lease id, TTL) pairs.
pub fn records(meta: Vec<(String, sled::IVec)>) -> Result<Vec<(i64, i64)>, crate::mvcc::MvccError> {
    meta.into_iter()
        .map(|(name, value)| {
            let id = name
                .strip_prefix(META_PREFIX)
                .and_then(|hex| i64::from_str_radix(hex, 16).ok());
            let ttl = <[u8; 8]>::try_from(value.as_ref())
                .ok()
                .map(i64::from_be_bytes);
            id.zip(ttl).ok_or_else(|| {
                crate::mvcc::MvccError::Storage(format!("corrupt lease record {name}"))
            })
        })
        .collect()
}

struct Lease {
    ttl: i64,
    expiry: Instant,
}

/// Leases and their deadlines.
pub struct Lessor {
    leases: Mutex<HashMap<i64, Lease>>,
    min_ttl: i64,
    /// Whether this member expires leases (it leads, and gave every lease a
    /// full TTL when it became leader). Only then are deadlines meaningful.
    primary: AtomicBool,
}

impl Lessor {
    /// A lessor whose shortest TTL is `min_ttl` seconds.
    pub fn new(min_ttl: i64) -> Self {
        Lessor {
            leases: Mutex::new(HashMap::new()),
            min_ttl,
            primary: AtomicBool::new(false),
        }
    }

    /// etcd's minimum TTL: one and a half election timeouts, rounded up to
    /// whole seconds (2 s with the default 1 s election timeout).
    pub fn min_ttl_for(election_timeout: Duration) -> i64 {
        (election_timeout.as_secs_f64() * 1.5).ceil() as i64
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces all leases with records read from the store, each with a
    /// full TTL from now.
    pub fn restore(&self, records: impl IntoIterator<Item = (i64, i64)>) {
        let now = Instant::now();
        let mut leases = self.lock();
        leases.clear();
        for (id, ttl) in records {
            leases.insert(id, lease_from(now, ttl));
        }
    }

    /// Reads the lease records of `mvcc` into this lessor.
    pub fn restore_from(&self, mvcc: &crate::mvcc::Mvcc) -> Result<(), crate::mvcc::MvccError> {
        self.restore(records(mvcc.meta_with_prefix(META_PREFIX)?)?);
        Ok(())
    }

    /// The TTL a grant of `ttl` gets: at least the minimum.
    pub fn effective_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.min_ttl)
    }

    /// Applies a grant; false if the lease exists.
    pub fn grant(&self, id: i64, ttl: i64) -> bool {
        let mut leases = self.lock();
        if leases.contains_key(&id) {
            return false;
        }
        leases.insert(id, lease_from(Instant::now(), ttl));
        true
    }

    /// Applies a revoke; false if there was no such lease.
    pub fn revoke(&self, id: i64) -> bool {
        self.lock().remove(&id).is_some()
    }

    /// Extends a lease to a full TTL from now; its TTL, or None if unknown.
    ///
    /// On the primary, a lease whose deadline has passed is not renewed: its
    /// revoke is already due (or proposed), and reviving it would answer a
    /// keep-alive with a TTL for a lease about to vanish, or keep alive keys
    /// etcd would have deleted. etcd answers such a keep-alive "not found".
    pub fn renew(&self, id: i64) -> Option<i64> {
        let now = Instant::now();
        let primary = self.primary.load(Ordering::Acquire);
        let mut leases = self.lock();
        let lease = leases.get_mut(&id)?;
        if primary && lease.expiry <= now {
            return None;
        }
        lease.expiry = now + secs(lease.ttl);
        Some(lease.ttl)
    }

    /// (remaining whole seconds, granted TTL) of a lease.
    pub fn time_to_live(&self, id: i64) -> Option<(i64, i64)> {
        let leases = self.lock();
        let lease = leases.get(&id)?;
        let remaining = lease
            .expiry
            .saturating_duration_since(Instant::now())
            .as_secs() as i64;
        Some((remaining, lease.ttl))
    }

    /// Every lease id, ascending.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .lock()
            .iter()
            .filter(|(_, l)| l.expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Gives every lease a full TTL from now: a new leader never expires a
    /// lease early because of time that passed under another leader.
    pub fn refresh_all(&self) {
        let now = Instant::now();
        for lease in self.lock().values_mut() {
            lease.expiry = now + secs(lease.ttl);
        }
    }

    /// This member became leader: every lease gets a full TTL, and from now
    /// on deadlines count (see [`Lessor::renew`]).
    pub fn promote(&self) {
        self.refresh_all();
        self.primary.store(true, Ordering::Release);
    }

    /// This member stopped leading: its deadlines no longer count.
    pub fn demote(&self) {
        self.primary.store(false, Ordering::Release);
    }
}

impl Leases for Lessor {
    fn exists(&self, id: i64) -> bool {
        self.lock().contains_key(&id)
    }
}

fn lease_from(now: Instant, ttl: i64) -> Lease {
    Lease {
        ttl,
        expiry: now + secs(ttl),
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.clamp(0, MAX_TTL) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(Lessor::min_ttl_for(Duration::from_millis(1000)), 2);
        assert_eq!(Lessor::min_ttl_for(Duration::from_millis(3000)), 5);
        assert_eq!(Lessor::new(2).effective_ttl(1), 2);
        assert_eq!(Lessor::new(2).effective_ttl(60), 60);
    }

    #[test]
    fn grant_renew_revoke() {
        let l = Lessor::new(2);
        assert!(l.grant(7, 10));
        assert!(!l.grant(7, 10), "a lease id is granted once");
        assert!(l.exists(7));
        assert_eq!(l.renew(7), Some(10));
        let (remaining, granted) = l.time_to_live(7).unwrap();
        assert!((9..=10).contains(&remaining));
        assert_eq!(granted, 10);
        assert!(l.revoke(7));
        assert_eq!(l.renew(7), None);
        assert!(!l.revoke(7));
    }

    #[test]
    fn the_primary_does_not_renew_a_lease_whose_deadline_passed() {
        let l = Lessor::new(1);
        l.grant(1, 1);
        l.promote();
        {
            let mut leases = l.lock();
            leases.get_mut(&1).unwrap().expiry = Instant::now();
        }
        assert_eq!(l.renew(1), None, "expired: its revoke is due");
        assert_eq!(l.expired(Instant::now()), vec![1], "still to be revoked");
        // A member that is not primary keeps no meaningful deadlines.
        l.demote();
        assert_eq!(l.renew(1), Some(1));
        // Promotion gives a full TTL first, so nothing is refused early.
        l.promote();
        assert_eq!(l.renew(1), Some(1));
    }

    #[test]
    fn expiry_and_refresh() {
        let l = Lessor::new(1);
        l.grant(1, 1);
        l.grant(2, 100);
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(l.expired(later), vec![1]);
        l.refresh_all();
        assert_eq!(l.expired(Instant::now()), Vec::<i64>::new());
    }
}
