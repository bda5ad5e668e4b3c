//! `ferrocd snapshot restore`: a new member's data directory from a
//! snapshot in etcd's format, written by etcd 3.4 or 3.5 (`etcdctl
//! snapshot save`, or a copy of a member's `member/snap/db`) or by ferrocd.
//!
//! What is kept, as etcd's restore keeps it: every change of the `key`
//! bucket with its revision (so reads at past revisions and watches from
//! them work as before), the compaction point, the leases (each starts a
//! full TTL when the new cluster elects a leader), users, roles and the
//! auth switch. What is new: the cluster, its members and their ids, from
//! the `--initial-*` flags, with etcd's rules. Every member of the new
//! cluster is restored from the same file with the same flags, each with
//! its own `--name`; all then start from the same state at the same raft
//! position (term 1, index = the number of members, as etcd's restore
//! writes it) and elect a leader.
//!
//! Nothing is left behind unless the whole restore succeeds: the
//! directory is built beside its destination, made durable, and renamed
//! into place last.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use ferrocd_proto::mvccpb::KeyValue;
use prost::Message;

use super::layout::*;
use super::{SnapshotError, TRAILER_LEN};
use crate::bbolt::DbReader;
use crate::mvcc::{Importer, Mvcc};
use crate::raft::{applied_record, Backend, LogId, Member, Membership, APPLIED};
use crate::{auth, config, ids, lease, server};

/// What to restore, and as which member of which new cluster: etcd's
/// `snapshot restore` flags.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub data_dir: PathBuf,
    pub name: String,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    /// Restore a file without etcd's sha256 trailer (a copied `db` file),
    /// and do not check the trailer of one that has it.
    pub skip_hash_check: bool,
}

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    /// The store's revision.
    pub revision: i64,
    /// The compacted revision, if the store was compacted.
    pub compacted: Option<i64>,
    /// Changes kept (entries of the `key` bucket).
    pub revisions: u64,
    pub leases: usize,
    /// Auth records (users, roles, the switch and its revision).
    pub auth_records: usize,
}

/// Restores `opts.snapshot` into `opts.data_dir`, which must not exist.
/// `progress` hears the number of changes restored so far, now and then.
pub fn restore(opts: &RestoreOptions, progress: &dyn Fn(u64)) -> Result<Restored, SnapshotError> {
    if opts.data_dir.exists() {
        return Err(SnapshotError::DataDirExists(opts.data_dir.clone()));
    }
    let (members, member_id) = config::cluster_members_from_flags(
        &opts.initial_cluster,
        &opts.initial_cluster_token,
        &opts.name,
        &opts.initial_advertise_peer_urls,
    )?;
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let cluster_id = ids::cluster_id(&ids);
    check_hash(&opts.snapshot, opts.skip_hash_check)?;
    let db = DbReader::open(&opts.snapshot)?;
    db.check()?;

    let parent = match opts.data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let file_name = opts
        .data_dir
        .file_name()
        .ok_or_else(|| SnapshotError::Integrity("--data-dir names no directory".into()))?;
    let mut scratch_name = std::ffi::OsString::from(".");
    scratch_name.push(file_name);
    scratch_name.push(".restoring");
    let scratch = parent.join(scratch_name);
    if scratch.exists() {
        // Left by a restore cut short: never renamed into place.
        fs::remove_dir_all(&scratch)?;
    }
    let result = build(&db, &scratch, &members, member_id, cluster_id, progress);
    let restored = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    fs::rename(&scratch, &opts.data_dir)?;
    fs::File::open(&parent)?.sync_all()?;
    Ok(restored)
}

/// etcd's rule: a snapshot whose size is a multiple of 512 plus 32 ends
/// with the sha256 of what precedes it.
fn check_hash(path: &Path, skip: bool) -> Result<(), SnapshotError> {
    let size = fs::metadata(path)?.len();
    let has_hash = size % 512 == TRAILER_LEN as u64;
    if !has_hash {
        return if skip {
            Ok(())
        } else {
            Err(SnapshotError::MissingHash)
        };
    }
    if skip {
        return Ok(());
    }
    let mut file = fs::File::open(path)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = size - TRAILER_LEN as u64;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        file.read_exact(&mut buf[..n])?;
        digest.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; TRAILER_LEN];
    file.read_exact(&mut stored)?;
    let mut computed = [0u8; TRAILER_LEN];
    computed.copy_from_slice(digest.finish().as_ref());
    if stored != computed {
        return Err(SnapshotError::HashMismatch {
            expected: stored,
            got: computed,
        });
    }
    Ok(())
}

/// Writes the member directory under `root` and makes it durable.
fn build(
    db: &DbReader<crate::bbolt::FileSource>,
    root: &Path,
    members: &[config::InitialMember],
    member_id: u64,
    cluster_id: u64,
    progress: &dyn Fn(u64),
) -> Result<Restored, SnapshotError> {
    let dir = root.join("member");
    fs::create_dir_all(&dir)?;
    let state = sled::Config::new().path(dir.join("db")).open()?;
    let backend = Backend::open(&state, &dir.join("snap"))?;
    let mut import = Importer::new(backend.state_tree()?)?;

    db.for_each(KEY, |k, v| {
        let (rev, tombstone) = parse_revision_key(k)
            .ok_or_else(|| SnapshotError::Integrity("a key that is not a revision".into()))?;
        let v = v.ok_or_else(|| SnapshotError::Integrity("a bucket inside `key`".into()))?;
        let kv = KeyValue::decode(v).map_err(|_| {
            SnapshotError::Integrity(format!("undecodable change at revision {}", rev.main))
        })?;
        import.revision(rev, tombstone, kv)?;
        if import.revisions() % 10_000 == 0 {
            progress(import.revisions());
        }
        Ok::<_, SnapshotError>(())
    })?;
    progress(import.revisions());

    let mut compacted: Option<i64> = None;
    db.for_each(META, |k, v| {
        if k == FINISHED_COMPACT_REV || k == SCHEDULED_COMPACT_REV {
            // A scheduled compaction not finished is finished at start, as
            // etcd does.
            let (rev, _) = v.and_then(parse_revision_key).ok_or_else(|| {
                SnapshotError::Integrity("undecodable compaction revision".into())
            })?;
            compacted = compacted.max(Some(rev.main));
        }
        Ok::<_, SnapshotError>(())
    })?;

    let mut leases = 0;
    db.for_each(LEASE, |k, v| {
        let record = v
            .and_then(|v| LeaseRecord::decode(v).ok())
            .filter(|r| k == lease_key(r.id).as_slice() && r.ttl > 0)
            .ok_or_else(|| SnapshotError::Integrity("undecodable lease record".into()))?;
        import.meta(&lease::meta_name(record.id), &record.ttl.to_be_bytes())?;
        leases += 1;
        Ok::<_, SnapshotError>(())
    })?;

    let mut auth_records = 0;
    for bucket in [AUTH, AUTH_USERS, AUTH_ROLES] {
        db.for_each(bucket, |k, v| {
            let v =
                v.ok_or_else(|| SnapshotError::Integrity("a bucket inside an auth bucket".into()))?;
            if let Some((name, value)) = auth::meta_of_etcd_entry(bucket, k, v)? {
                import.meta(&name, &value)?;
                auth_records += 1;
            }
            Ok::<_, SnapshotError>(())
        })?;
    }

    let voters: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
    let nodes: BTreeMap<u64, Member> = members
        .iter()
        .map(|m| {
            let member = Member {
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: Vec::new(),
            };
            (m.id, member)
        })
        .collect();
    let first = *voters.iter().next().expect("a cluster has a member");
    let log_id = LogId::new(
        openraft::CommittedLeaderId::new(1, first),
        members.len() as u64,
    );
    let (name, value) = applied_record(log_id, Membership::new(vec![voters], nodes))
        .map_err(|e| SnapshotError::Integrity(format!("encoding the raft position: {e}")))?;
    import.meta(name, &value)?;

    let revisions = import.revisions();
    let revision = import.finish(compacted.unwrap_or(0), compacted)?;
    state.flush()?;
    // The key index, checkpointed as a graceful stop leaves it: the first
    // start loads it instead of rebuilding it from every record. Without
    // it (a failed write), the start rebuilds, so a failure is only said.
    let store = Mvcc::open(backend.state_tree()?)?;
    if let Err(e) = store.write_checkpoint(&server::checkpoint_path(&dir), APPLIED) {
        tracing::warn!("no key index checkpoint written: {e}");
    }
    drop(store);
    drop(backend);
    drop(state);
    server::write_identity(&dir, member_id, cluster_id)?;
    fs::File::open(&dir)?.sync_all()?;
    fs::File::open(root)?.sync_all()?;
    Ok(Restored {
        member_id,
        cluster_id,
        revision,
        compacted,
        revisions,
        leases,
        auth_records,
    })
}
