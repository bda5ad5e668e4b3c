//! Writes the store as etcd 3.4's backend database, a point-in-time view
//! taken while writes go on.
//!
//! The export fixes a revision R, the leases, the membership and the
//! applied index in one view of the store. The history up to R is then
//! read in chunks, each under a short view, so writers wait for one chunk
//! at most, never for the whole export: nothing at or below R changes
//! afterwards, unless a compaction or an installed snapshot removes it.
//! Both are noticed, and the export starts over.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::time::Instant;

use ferrocd_proto::mvccpb::KeyValue;
use prost::Message;

use super::layout::*;
use super::SnapshotError;
use crate::bbolt::DbWriter;
use crate::lease;
use crate::mvcc::{Mvcc, ReadView, Revision};
use crate::raft::{applied_in, Membership};

/// Revisions read per view of the store.
const CHUNK: usize = 1000;
/// Starts over after this many interruptions before giving up.
const ATTEMPTS: usize = 3;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// The revision the snapshot is of.
    pub revision: i64,
    /// The compacted revision (-1 if none).
    pub compacted: i64,
    /// Entries of the `key` bucket (every kept revision).
    pub revisions: u64,
    pub leases: usize,
    /// The database's size in bytes (the file, without any trailer).
    pub size: u64,
}

/// Writes the store into `file` (from its start, replacing what it held)
/// as an etcd 3.4 backend database. `cancelled` is asked between chunks;
/// when it says yes the export stops with [`SnapshotError::Cancelled`].
pub fn export(
    mvcc: &Mvcc,
    file: &mut File,
    cancelled: &dyn Fn() -> bool,
) -> Result<Exported, SnapshotError> {
    let mut last = SnapshotError::StoreChanged;
    for attempt in 1..=ATTEMPTS {
        match export_once(mvcc, file, cancelled) {
            Err(SnapshotError::StoreChanged) => {
                tracing::info!(
                    attempt,
                    "snapshot: the store was compacted or replaced meanwhile; starting over"
                );
                last = SnapshotError::StoreChanged;
            }
            other => return other,
        }
    }
    Err(last)
}

/// What the export's first view fixes.
struct Fixed {
    revision: i64,
    compacted: i64,
    epoch: u64,
    applied_index: u64,
    membership: Membership,
    /// (id, TTL), in any order.
    leases: Vec<(i64, i64)>,
    auth: crate::auth::EtcdAuthBuckets,
    /// The active alarms, each as etcd's `alarm` bucket key (the
    /// `AlarmMember` in protobuf), sorted.
    alarms: Vec<Vec<u8>>,
}

fn export_once(
    mvcc: &Mvcc,
    file: &mut File,
    cancelled: &dyn Fn() -> bool,
) -> Result<Exported, SnapshotError> {
    let started = Instant::now();
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    let fixed = {
        let view = mvcc.read();
        let (applied_index, membership) = applied_in(&view)?;
        Fixed {
            revision: view.rev(),
            compacted: view.compacted(),
            epoch: view.epoch(),
            applied_index,
            membership,
            leases: lease::records(view.meta_with_prefix(lease::META_PREFIX)?)?,
            auth: crate::auth::etcd_buckets(&view)?,
            alarms: {
                let mut keys: Vec<Vec<u8>> = crate::alarm::records_in(&view)?
                    .iter()
                    .map(Message::encode_to_vec)
                    .collect();
                keys.sort();
                keys
            },
        }
    };
    tracing::info!(
        revision = fixed.revision,
        compacted = fixed.compacted,
        leases = fixed.leases.len(),
        "snapshot: writing the backend database"
    );
    // Buckets in name order, as the writer needs them.
    let mut w = DbWriter::new(&mut *file)?;
    w.bucket(ALARM)?;
    // etcd keeps each alarm as a key with an empty value.
    for key in &fixed.alarms {
        w.put(key, &[])?;
    }
    w.bucket(AUTH)?;
    if let Some(enabled) = fixed.auth.enabled {
        w.put(AUTH_ENABLED, &[u8::from(enabled)])?;
    }
    w.put(AUTH_REVISION, &fixed.auth.revision.to_be_bytes())?;
    w.bucket(AUTH_ROLES)?;
    for (name, role) in &fixed.auth.roles {
        w.put(name, role)?;
    }
    w.bucket(AUTH_USERS)?;
    for (name, user) in &fixed.auth.users {
        w.put(name, user)?;
    }
    w.bucket(CLUSTER)?;
    w.put(CLUSTER_VERSION, CLUSTER_VERSION_3_4)?;
    w.bucket(KEY)?;
    let revisions = write_history(mvcc, &mut w, &fixed, cancelled)?;
    w.bucket(LEASE)?;
    let mut leases: Vec<_> = fixed
        .leases
        .iter()
        .map(|&(id, ttl)| (lease_key(id), ttl))
        .collect();
    leases.sort();
    for (key, ttl) in &leases {
        w.put(key, &lease_value(i64::from_be_bytes(*key), *ttl))?;
    }
    w.bucket(MEMBERS)?;
    let learners: Vec<u64> = fixed.membership.learner_ids().collect();
    let mut members: Vec<_> = fixed
        .membership
        .nodes()
        .map(|(id, m)| (member_key(*id), member_value(*id, m, learners.contains(id))))
        .collect();
    members.sort();
    for (key, value) in &members {
        w.put(key.as_bytes(), value)?;
    }
    w.bucket(MEMBERS_REMOVED)?;
    w.bucket(META)?;
    w.put(CONSISTENT_INDEX, &fixed.applied_index.to_be_bytes())?;
    if fixed.compacted > 0 {
        let rev = revision_key(Revision::new(fixed.compacted, 0), false);
        w.put(FINISHED_COMPACT_REV, &rev)?;
        w.put(SCHEDULED_COMPACT_REV, &rev)?;
    }
    let (_, size) = w.finish()?;
    tracing::info!(
        revision = fixed.revision,
        revisions,
        size,
        took_ms = started.elapsed().as_millis() as u64,
        "snapshot: backend database written"
    );
    Ok(Exported {
        revision: fixed.revision,
        compacted: fixed.compacted,
        revisions,
        leases: leases.len(),
        size,
    })
}

/// Writes every kept change up to the fixed revision into the `key`
/// bucket; returns how many.
fn write_history(
    mvcc: &Mvcc,
    w: &mut DbWriter<&mut File>,
    fixed: &Fixed,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, SnapshotError> {
    let mut from = Revision::new(0, 0);
    let mut n = 0u64;
    loop {
        if cancelled() {
            return Err(SnapshotError::Cancelled);
        }
        let chunk = {
            let view = mvcc.read();
            if view.epoch() != fixed.epoch || view.compacted() != fixed.compacted {
                return Err(SnapshotError::StoreChanged);
            }
            view.revisions(from, fixed.revision, CHUNK)?
        };
        for r in &chunk {
            let value = if r.tombstone {
                // etcd's tombstones hold only the key.
                KeyValue {
                    key: r.kv.key.clone(),
                    ..Default::default()
                }
                .encode_to_vec()
            } else {
                r.kv.encode_to_vec()
            };
            w.put(&revision_key(r.rev, r.tombstone), &value)?;
        }
        n += chunk.len() as u64;
        match chunk.last() {
            Some(last) if chunk.len() == CHUNK => {
                from = Revision::new(last.rev.main, last.rev.sub + 1);
            }
            _ => return Ok(n),
        }
    }
}
