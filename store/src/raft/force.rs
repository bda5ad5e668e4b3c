//! `--force-new-cluster`: a member that lost its quorum for good becomes
//! the only voter of its cluster, keeping its data, its member id and the
//! cluster id.
//!
//! Done before raft starts, on the storage alone: a membership entry with
//! this member as the only voter is appended after the last log entry, in
//! a term above every term seen, and recorded as committed, so that raft
//! starts with it applied and the member elects itself at once. Unlike
//! etcd, entries this member had received but not yet seen committed are
//! kept (committed by the new entry): with no other member left, they are
//! the newest writes there are, and one of them may have been acknowledged
//! by the lost leader.
//!
//! etcd rewrites the membership at every start with the flag. ferrocd does
//! it once: it records the entry it wrote (`force_new_cluster.json` in the
//! member directory), and later starts with the flag still set leave the
//! membership alone while that record is there, so members added since are
//! not cut off again. A start without the flag removes the record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, RaftLogReader, Vote};
use serde::{Deserialize, Serialize};

use tracing::{info, warn};

use super::{LogId, LogStore, Member, Membership, StateMachine, StorageError};
use crate::config::Config;

/// The record of a forced membership, in the member directory.
const RECORD: &str = "force_new_cluster.json";

/// What `--force-new-cluster` did at this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forced {
    /// No data yet: the member starts as a normal one would.
    Empty,
    /// This member already is the only member: nothing to change.
    AlreadyAlone,
    /// An earlier start with the flag rewrote the membership at this log
    /// index; this start leaves it alone.
    AlreadyForced { index: u64 },
    /// The membership was rewritten at this log index, removing these
    /// members.
    Rewritten { index: u64, removed: Vec<u64> },
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    index: u64,
    term: u64,
}

/// Why the membership could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path}: {source}")]
    Record {
        path: String,
        source: std::io::Error,
    },
}

/// Makes member `me` the only voter of the membership found in `log` and
/// `sm` (see the module doc). `fallback` describes this member when the
/// membership does not (it had been removed).
pub async fn force_new_cluster(
    dir: &Path,
    log: &mut LogStore,
    sm: &mut StateMachine,
    me: u64,
    fallback: Member,
) -> Result<Forced, ForceError> {
    let path = dir.join(RECORD);
    if let Some(record) = read_record(&path)? {
        return Ok(Forced::AlreadyForced {
            index: record.index,
        });
    }
    let state = log.get_log_state().await?;
    let (applied, stored) = sm.applied_state().await?;
    let last = match (state.last_log_id, applied) {
        (Some(l), Some(a)) if a.index > l.index => Some(a),
        (None, a) => a,
        (l, _) => l,
    };
    let Some(last) = last else {
        return Ok(Forced::Empty);
    };
    let current = effective_membership(log, applied, last, stored.membership().clone()).await?;
    let Some(plan) = plan(&current, me, fallback) else {
        return Ok(Forced::AlreadyAlone);
    };
    if state.last_log_id.map(|l| l.index) < applied.map(|a| a.index) {
        // A snapshot was installed and the log behind it not yet purged
        // (a crash in between): the new entry follows the snapshot.
        log.purge(last).await?;
    }
    let vote = log.read_vote().await?.unwrap_or_default();
    let term = vote.leader_id().term.max(last.leader_id.term) + 1;
    let log_id = LogId::new(CommittedLeaderId::new(term, me), last.index + 1);
    log.append_synced(&Entry {
        log_id,
        payload: EntryPayload::Membership(plan.membership),
    })?;
    log.save_committed(Some(log_id)).await?;
    // A vote in the new term for itself, not yet granted: the member
    // campaigns in the next term and wins alone. Saving it flushes the
    // commit index too.
    log.save_vote(&Vote::new(term, me)).await?;
    write_record(
        dir,
        &Record {
            index: log_id.index,
            term,
        },
    )?;
    Ok(Forced::Rewritten {
        index: log_id.index,
        removed: plan.removed,
    })
}

/// Acts on `--force-new-cluster` before raft starts (see
/// [`crate::raft::force`]); without the flag, forgets an earlier use of it.
pub async fn at_start(
    config: &Config,
    dir: &Path,
    log: &mut LogStore,
    sm: &mut StateMachine,
) -> Result<(), ForceError> {
    if !config.force_new_cluster {
        return clear_record(dir);
    }
    let me = Member {
        name: config.name.clone(),
        peer_urls: config.peer_urls.clone(),
        client_urls: config.advertise_client_urls.clone(),
    };
    let member = format!("{:x}", config.member_id);
    match force_new_cluster(dir, log, sm, config.member_id, me).await? {
        Forced::Empty => info!("--force-new-cluster: no data yet, starting as usual"),
        Forced::AlreadyAlone => info!(%member, "--force-new-cluster: already the only member"),
        Forced::AlreadyForced { index } => warn!(
            %member, index,
            "--force-new-cluster: applied by an earlier start (membership at this log index); \
             keeping the membership as it is now. Start once without the flag to make it force again"
        ),
        Forced::Rewritten { index, removed } => warn!(
            %member, index,
            removed = ?removed.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(),
            "--force-new-cluster: this member is now the only member of its cluster; \
             add members back with member add"
        ),
    }
    Ok(())
}

/// Removes the record of an earlier forced membership: a start without the
/// flag makes a later start with it force again.
pub fn clear_record(dir: &Path) -> Result<(), ForceError> {
    let path = dir.join(RECORD);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ForceError::Record {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The new membership and the members it drops.
#[derive(Debug)]
struct Plan {
    membership: Membership,
    removed: Vec<u64>,
}

/// The membership with `me` as its only member, or `None` when it already
/// is (one voter, `me`, no learners).
fn plan(current: &Membership, me: u64, fallback: Member) -> Option<Plan> {
    let ids: BTreeSet<u64> = current.nodes().map(|(id, _)| *id).collect();
    let voters: BTreeSet<u64> = current.voter_ids().collect();
    if ids == BTreeSet::from([me]) && voters == ids {
        return None;
    }
    let node = current.get_node(&me).cloned().unwrap_or(fallback);
    let membership = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, node)]));
    Some(Plan {
        membership,
        removed: ids.into_iter().filter(|id| *id != me).collect(),
    })
}

/// The membership in force at the end of the log: the last one in the
/// entries after `applied`, or the applied one.
async fn effective_membership(
    log: &mut LogStore,
    applied: Option<LogId>,
    last: LogId,
    applied_membership: Membership,
) -> Result<Membership, StorageError> {
    let start = applied.map_or(0, |a| a.index + 1);
    let mut found = applied_membership;
    let mut from = start;
    while from <= last.index {
        let to = (from + 256).min(last.index + 1);
        for entry in log.try_get_log_entries(from..to).await? {
            if let EntryPayload::Membership(m) = entry.payload {
                found = m;
            }
        }
        from = to;
    }
    Ok(found)
}

fn read_record(path: &Path) -> Result<Option<Record>, ForceError> {
    let err = |source| ForceError::Record {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| err(std::io::Error::other(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e)),
    }
}

fn write_record(dir: &Path, record: &Record) -> Result<(), ForceError> {
    let path = dir.join(RECORD);
    let write = || -> std::io::Result<()> {
        let tmp = dir.join(format!("{RECORD}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(record).map_err(std::io::Error::other)?,
        )?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| ForceError::Record {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: vec![format!("http://{name}:2379")],
        }
    }

    fn membership(voters: &[u64], learners: &[u64]) -> Membership {
        let nodes: BTreeMap<u64, Member> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, member(&format!("m{id}"))))
            .collect();
        Membership::new(vec![voters.iter().copied().collect()], nodes)
    }

    #[test]
    fn every_other_member_and_learner_is_removed_and_this_one_keeps_its_urls() {
        let p = plan(&membership(&[1, 2, 3], &[4]), 2, member("other")).unwrap();
        assert_eq!(p.removed, vec![1, 3, 4]);
        assert_eq!(p.membership.voter_ids().collect::<Vec<_>>(), vec![2]);
        assert_eq!(p.membership.get_node(&2), Some(&member("m2")));
        assert_eq!(p.membership.nodes().count(), 1);
    }

    #[test]
    fn a_lone_voter_needs_no_change() {
        assert!(plan(&membership(&[7], &[]), 7, member("x")).is_none());
    }

    #[test]
    fn a_lone_voter_with_a_learner_drops_the_learner() {
        let p = plan(&membership(&[7], &[8]), 7, member("x")).unwrap();
        assert_eq!(p.removed, vec![8]);
    }

    #[test]
    fn a_learner_or_removed_member_becomes_the_only_voter() {
        let p = plan(&membership(&[1, 2], &[3]), 3, member("x")).unwrap();
        assert_eq!(p.membership.voter_ids().collect::<Vec<_>>(), vec![3]);
        let p = plan(&membership(&[1, 2], &[]), 9, member("x")).unwrap();
        assert_eq!(p.membership.get_node(&9), Some(&member("x")));
        assert_eq!(p.removed, vec![1, 2]);
    }

    #[test]
    fn the_record_round_trips_and_clearing_twice_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        write_record(dir.path(), &Record { index: 5, term: 3 }).unwrap();
        let r = read_record(&dir.path().join(RECORD)).unwrap().unwrap();
        assert_eq!((r.index, r.term), (5, 3));
        clear_record(dir.path()).unwrap();
        clear_record(dir.path()).unwrap();
        assert!(read_record(&dir.path().join(RECORD)).unwrap().is_none());
    }
}
