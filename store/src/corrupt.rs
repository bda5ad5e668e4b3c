//! The rules of etcd's data corruption checks, apart from the asking: what
//! a member concludes from its own hash of the store and its peers'.
//!
//! * At start (`--experimental-initial-corrupt-check`), a member hashes its
//!   store at its current revision R and asks every peer for its hash at
//!   R. A peer whose hash differs while its compacted revision is the same
//!   holds different data: the member refuses to start. A different
//!   compacted revision explains a different hash; a peer behind R, or one
//!   that compacted R away, cannot tell.
//! * Periodically (`--experimental-corrupt-check-time`), the leader hashes
//!   at its current revision, asks its followers for their hash there,
//!   catches up with everything committed meanwhile, and hashes again. It
//!   blames itself when its own hash changed without its revision or
//!   compaction changing; a follower that reports a revision or compaction
//!   ahead of the leader's, or a different hash at the compacted revision
//!   the leader hashed with. Only the first member blamed in one check is
//!   alarmed, as in etcd.
//!
//! The hash is ferrocd's own ([`Mvcc::hash_kv`](crate::mvcc::Mvcc::hash_kv)),
//! the same on members that applied the same log.

use std::fmt;

/// A hash of this member's store: what `Mvcc::hash_kv` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalHash {
    pub hash: u32,
    /// The revision hashed (the current one).
    pub revision: i64,
    pub compact_revision: i64,
}

/// A peer's hash at the revision it was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHash {
    pub hash: u32,
    /// The peer's current revision (not the one hashed).
    pub revision: i64,
    pub compact_revision: i64,
}

/// What a peer answered when asked for its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAnswer {
    Hash(PeerHash),
    /// The revision asked is newer than the peer's: it is behind.
    FutureRevision,
    /// The peer has compacted the revision asked away.
    Compacted,
    /// No answer (unreachable, timed out, refused); why.
    Failed(String),
}

/// What the check at start makes of one peer's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialFinding {
    /// Same hash.
    Consistent,
    /// Different hash at the same compacted revision: the data differ.
    HashMismatch,
    /// Different hash, explained by a different compacted revision.
    CompactRevisionDiffers,
    /// The peer has not reached this member's revision yet.
    PeerBehind,
    /// The peer compacted this member's revision away.
    LocalBehind,
    /// The peer did not answer.
    NoAnswer,
}

/// The check at start, for one peer.
pub fn initial_finding(local: &LocalHash, answer: &PeerAnswer) -> InitialFinding {
    match answer {
        PeerAnswer::Hash(p) if p.hash == local.hash => InitialFinding::Consistent,
        PeerAnswer::Hash(p) if p.compact_revision == local.compact_revision => {
            InitialFinding::HashMismatch
        }
        PeerAnswer::Hash(_) => InitialFinding::CompactRevisionDiffers,
        PeerAnswer::FutureRevision => InitialFinding::PeerBehind,
        PeerAnswer::Compacted => InitialFinding::LocalBehind,
        PeerAnswer::Failed(_) => InitialFinding::NoAnswer,
    }
}

/// Why the periodic check blames a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The leader's own hash changed while its revision and compacted
    /// revision did not.
    LocalHashChanged { first: u32, second: u32 },
    /// A follower is at a revision the leader has not reached.
    RevisionAhead { follower: i64, leader: i64 },
    /// A follower compacted further than the leader.
    CompactRevisionAhead { follower: i64, leader: i64 },
    /// Same compacted revision as the leader's first hash, different hash.
    HashMismatch { follower: u32, leader: u32 },
}

impl fmt::Display for Blame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blame::LocalHashChanged { first, second } => write!(
                f,
                "found hash mismatch: hash {first} then {second} at the same revision"
            ),
            Blame::RevisionAhead { follower, leader } => write!(
                f,
                "revision from follower must be less than or equal to leader's \
                 (follower {follower}, leader {leader})"
            ),
            Blame::CompactRevisionAhead { follower, leader } => write!(
                f,
                "compact revision from follower must be less than or equal to leader's \
                 (follower {follower}, leader {leader})"
            ),
            Blame::HashMismatch { follower, leader } => write!(
                f,
                "same compact revision then hashes must match (follower {follower}, leader {leader})"
            ),
        }
    }
}

/// The outcome of one periodic check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every member blamed, with why, in the order found.
    pub blamed: Vec<(u64, Blame)>,
    /// Followers whose hash was compared.
    pub checked: usize,
}

impl Verdict {
    /// The member to raise CORRUPT for: the first blamed (etcd raises one
    /// alarm per check).
    pub fn alarm(&self) -> Option<u64> {
        self.blamed.first().map(|(id, _)| *id)
    }
}

/// The periodic check on the leader `me`: `before` is its hash when it
/// asked the `followers` (id, answer to a hash at `before.revision`),
/// `after` its hash once it had applied all that was committed by then.
pub fn periodic_verdict(
    me: u64,
    before: &LocalHash,
    after: &LocalHash,
    followers: &[(u64, PeerAnswer)],
) -> Verdict {
    let mut verdict = Verdict::default();
    if after.hash != before.hash
        && after.revision == before.revision
        && after.compact_revision == before.compact_revision
    {
        let blame = Blame::LocalHashChanged {
            first: before.hash,
            second: after.hash,
        };
        verdict.blamed.push((me, blame));
    }
    for (id, answer) in followers {
        let PeerAnswer::Hash(p) = answer else {
            continue;
        };
        verdict.checked += 1;
        if p.revision > after.revision {
            let blame = Blame::RevisionAhead {
                follower: p.revision,
                leader: after.revision,
            };
            verdict.blamed.push((*id, blame));
        }
        if p.compact_revision > after.compact_revision {
            let blame = Blame::CompactRevisionAhead {
                follower: p.compact_revision,
                leader: after.compact_revision,
            };
            verdict.blamed.push((*id, blame));
        }
        if p.compact_revision == before.compact_revision && p.hash != before.hash {
            let blame = Blame::HashMismatch {
                follower: p.hash,
                leader: before.hash,
            };
            verdict.blamed.push((*id, blame));
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: u64 = 1;

    fn local(hash: u32, revision: i64, compact_revision: i64) -> LocalHash {
        LocalHash {
            hash,
            revision,
            compact_revision,
        }
    }

    fn peer(hash: u32, revision: i64, compact_revision: i64) -> PeerAnswer {
        PeerAnswer::Hash(PeerHash {
            hash,
            revision,
            compact_revision,
        })
    }

    #[test]
    fn at_start_a_different_hash_at_the_same_compaction_is_a_mismatch() {
        let me = local(7, 100, 50);
        assert_eq!(
            initial_finding(&me, &peer(8, 120, 50)),
            InitialFinding::HashMismatch
        );
    }

    #[test]
    fn at_start_a_different_compaction_explains_a_different_hash() {
        let me = local(7, 100, 50);
        assert_eq!(
            initial_finding(&me, &peer(8, 120, 90)),
            InitialFinding::CompactRevisionDiffers
        );
    }

    #[test]
    fn at_start_the_same_hash_is_consistent_whatever_the_revisions() {
        let me = local(7, 100, 50);
        assert_eq!(
            initial_finding(&me, &peer(7, 400, 90)),
            InitialFinding::Consistent
        );
    }

    #[test]
    fn at_start_peers_that_cannot_hash_the_revision_are_skipped() {
        let me = local(7, 100, 50);
        assert_eq!(
            initial_finding(&me, &PeerAnswer::FutureRevision),
            InitialFinding::PeerBehind
        );
        assert_eq!(
            initial_finding(&me, &PeerAnswer::Compacted),
            InitialFinding::LocalBehind
        );
        assert_eq!(
            initial_finding(&me, &PeerAnswer::Failed("refused".into())),
            InitialFinding::NoAnswer
        );
    }

    #[test]
    fn agreeing_followers_blame_nobody() {
        let (before, after) = (local(7, 100, 50), local(9, 104, 50));
        let v = periodic_verdict(
            LEADER,
            &before,
            &after,
            &[(2, peer(7, 103, 50)), (3, peer(7, 104, 50))],
        );
        assert_eq!(v.alarm(), None);
        assert_eq!(v.checked, 2);
    }

    #[test]
    fn a_follower_with_another_hash_at_the_same_compaction_is_blamed() {
        let s = local(7, 100, 50);
        let v = periodic_verdict(
            LEADER,
            &s,
            &s,
            &[(2, peer(7, 100, 50)), (3, peer(8, 100, 50))],
        );
        assert_eq!(v.alarm(), Some(3));
        assert_eq!(
            v.blamed,
            vec![(
                3,
                Blame::HashMismatch {
                    follower: 8,
                    leader: 7
                }
            )]
        );
    }

    #[test]
    fn a_follower_that_compacted_since_the_first_hash_is_not_compared() {
        // The leader applied the compaction between its two hashes.
        let (before, after) = (local(7, 100, 50), local(5, 101, 90));
        let v = periodic_verdict(LEADER, &before, &after, &[(2, peer(3, 101, 90))]);
        assert_eq!(v.alarm(), None);
        assert_eq!(v.checked, 1);
    }

    #[test]
    fn a_follower_ahead_of_the_leader_is_blamed() {
        let s = local(7, 100, 50);
        let ahead = periodic_verdict(LEADER, &s, &s, &[(2, peer(7, 101, 50))]);
        assert_eq!(ahead.alarm(), Some(2));
        let compacted = periodic_verdict(LEADER, &s, &s, &[(3, peer(9, 100, 60))]);
        assert_eq!(
            compacted.blamed,
            vec![(
                3,
                Blame::CompactRevisionAhead {
                    follower: 60,
                    leader: 50
                }
            )]
        );
    }

    #[test]
    fn a_leader_whose_own_hash_changed_blames_itself_first() {
        let v = periodic_verdict(
            LEADER,
            &local(7, 100, 50),
            &local(8, 100, 50),
            &[(2, peer(9, 100, 50))],
        );
        assert_eq!(v.alarm(), Some(LEADER));
        assert_eq!(v.blamed.len(), 2);
    }

    #[test]
    fn a_leader_alone_in_disagreeing_blames_the_first_follower() {
        // etcd trusts the leader's hash: both followers differ from it,
        // and only the first is alarmed.
        let s = local(7, 100, 50);
        let v = periodic_verdict(
            LEADER,
            &s,
            &s,
            &[(2, peer(8, 100, 50)), (3, peer(8, 100, 50))],
        );
        assert_eq!(v.alarm(), Some(2));
        assert_eq!(v.blamed.len(), 2);
    }

    #[test]
    fn followers_without_a_hash_are_not_counted() {
        let s = local(7, 100, 50);
        let v = periodic_verdict(
            LEADER,
            &s,
            &s,
            &[
                (2, PeerAnswer::FutureRevision),
                (3, PeerAnswer::Compacted),
                (4, PeerAnswer::Failed("timeout".into())),
            ],
        );
        assert_eq!(v, Verdict::default());
    }
}
