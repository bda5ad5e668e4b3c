//! The state machine: applies committed requests to MVCC, recording the last
//! applied log id and membership in the same atomic batch as the data.

use std::path::PathBuf;
use std::sync::Arc;

use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use ferrocd_proto::ferrocdpb::InternalRequest;
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{io_error, read_error, LogId, Request, Response, StorageError, TypeConfig};
use crate::auth::{AuthStore, Outcome};
use crate::kv::{self, KvError};
use crate::lease::{self, Lessor};
use crate::mvcc::{meta_key, KeyRange, Mvcc, MvccError, ReadView, WriteTxn};
use crate::snapshot::{self, SnapshotReader, SnapshotWriter};
use crate::watch::header_at;
use crate::watch::WatchHub;
use ferrocd_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse};

const APPLIED: &str = "raft_applied";
const CURRENT_SNAPSHOT: &str = "current.snap";
const CURRENT_META: &str = "current.meta";
const BUILDING_SNAPSHOT: &str = "building.snap";
const RECEIVING_SNAPSHOT: &str = "receiving.snap";

type Stored = StoredMembership<u64, super::Member>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    log_id: Option<LogId>,
    membership: Stored,
}

type Meta = SnapshotMeta<u64, super::Member>;

/// The state machine. Clones share the same store. Snapshots are files in
/// `snap_dir`, written and read in chunks.
#[derive(Clone)]
pub struct StateMachine {
    mvcc: Arc<Mvcc>,
    lessor: Arc<Lessor>,
    auth: Arc<AuthStore>,
    hub: Arc<WatchHub>,
    snap_dir: PathBuf,
    /// What the store records as applied, kept here so apply need not read
    /// it back every time; `None` until first read, and after a snapshot
    /// replaced the store.
    applied: Option<Applied>,
}

impl StateMachine {
    pub fn new(
        mvcc: Arc<Mvcc>,
        lessor: Arc<Lessor>,
        auth: Arc<AuthStore>,
        hub: Arc<WatchHub>,
        snap_dir: PathBuf,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snap_dir)?;
        // A transfer or build cut short (a crash, or a snapshot openraft
        // sent again) leaves its file behind; it is never read again.
        for stale in [RECEIVING_SNAPSHOT, BUILDING_SNAPSHOT] {
            match std::fs::remove_file(snap_dir.join(stale)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(StateMachine {
            mvcc,
            lessor,
            auth,
            hub,
            snap_dir,
            applied: None,
        })
    }

    async fn open_current(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let meta_path = self.snap_dir.join(CURRENT_META);
        let raw = match tokio::fs::read(&meta_path).await {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_error(e)),
        };
        let meta: Meta = bincode::deserialize(&raw).map_err(read_error)?;
        let file = tokio::fs::File::open(self.snap_dir.join(CURRENT_SNAPSHOT))
            .await
            .map_err(read_error)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }

    fn applied(&self) -> Result<Applied, StorageError> {
        if let Some(applied) = &self.applied {
            return Ok(applied.clone());
        }
        match self.mvcc.meta(APPLIED).map_err(read_error)? {
            None => Ok(Applied::default()),
            Some(raw) => bincode::deserialize(&raw).map_err(read_error),
        }
    }
}

/// Applies one request, of log entry `index`, inside `txn`. Deterministic:
/// reads nothing but the store, the lessor's set of leases and the auth
/// data (themselves changed only here).
fn execute(
    txn: &mut WriteTxn<'_>,
    lessor: &Lessor,
    auth: &AuthStore,
    req: &InternalRequest,
    index: u64,
) -> Response {
    if let Err(e) = auth.authorize(req, |lease| txn.lease_keys(lease)) {
        return Response::Refused(e);
    }
    if let Some(request) = &req.request {
        if let Some(outcome) = auth.apply(txn, request, index) {
            return match outcome {
                Ok(Outcome::Done) => Response::AuthDone,
                Ok(Outcome::Token(token)) => Response::Token(token),
                Err(e) => Response::Refused(e),
            };
        }
    }
    let result = match &req.request {
        Some(Internal::Put(r)) => kv::put(txn, r, lessor).map(Response::Put),
        Some(Internal::DeleteRange(r)) => kv::delete_range(txn, r).map(Response::DeleteRange),
        Some(Internal::Txn(r)) => kv::txn(txn, r, lessor).map(Response::Txn),
        Some(Internal::Compaction(r)) => kv::compact(txn, r).map(Response::Compaction),
        Some(Internal::LeaseGrant(r)) => lease_grant(txn, lessor, r).map(Response::LeaseGrant),
        Some(Internal::LeaseRevoke(r)) => {
            lease_revoke(txn, lessor, r.id).map(Response::LeaseRevoke)
        }
        // Checkpoints (remaining TTLs carried across leaders) are not used:
        // a new leader gives every lease a full TTL instead.
        Some(Internal::LeaseCheckpoint(_)) | None => Ok(Response::None),
        // Applied by the auth store above.
        Some(_) => Ok(Response::None),
    };
    result.unwrap_or_else(Response::Failed)
}

fn lease_grant(
    txn: &mut WriteTxn<'_>,
    lessor: &Lessor,
    r: &LeaseGrantRequest,
) -> Result<LeaseGrantResponse, KvError> {
    let ttl = lessor.effective_ttl(r.ttl);
    if !lessor.grant(r.id, ttl) {
        return Err(KvError::LeaseExist);
    }
    txn.set_meta(&lease::meta_name(r.id), &ttl.to_be_bytes());
    Ok(LeaseGrantResponse {
        header: header_at(txn.rev()),
        id: r.id,
        ttl,
        error: String::new(),
    })
}

/// Deletes every key attached to the lease, all in one revision.
fn lease_revoke(
    txn: &mut WriteTxn<'_>,
    lessor: &Lessor,
    id: i64,
) -> Result<LeaseRevokeResponse, KvError> {
    if !lessor.revoke(id) {
        return Err(KvError::LeaseNotFound);
    }
    for key in txn.lease_keys(id) {
        txn.delete_range(KeyRange::Single(&key));
    }
    txn.remove_meta(&lease::meta_name(id));
    Ok(LeaseRevokeResponse {
        header: header_at(txn.rev()),
    })
}

fn storage(e: MvccError) -> StorageError {
    io_error(e)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Stored), StorageError> {
        let a = self.applied()?;
        Ok((a.log_id, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied()?;
        let mut txn = self.mvcc.write();
        let mut out = Vec::new();
        let mut changes = Vec::new();
        for entry in entries {
            let mut responses = Vec::new();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Request(batch)) => {
                    // Each request of the batch is its own revision.
                    for req in &batch.requests {
                        txn.begin();
                        let index = entry.log_id.index;
                        responses.push(execute(&mut txn, &self.lessor, &self.auth, req, index));
                        changes.extend(txn.end());
                    }
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            applied.log_id = Some(entry.log_id);
            out.push(responses);
        }
        txn.set_meta(APPLIED, &bincode::serialize(&applied).map_err(io_error)?);
        txn.commit().map_err(storage)?;
        self.applied = Some(applied);
        // Watchers hear of a revision only once it is readable from the store.
        for (rev, events) in changes {
            self.hub.notify(rev, &events);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = tokio::fs::File::create(self.snap_dir.join(RECEIVING_SNAPSHOT))
            .await
            .map_err(io_error)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        self.applied = None;
        let mut received = snapshot.into_std().await;
        received.sync_all().map_err(io_error)?;
        let (mvcc, hub, dir, meta) = (
            self.mvcc.clone(),
            self.hub.clone(),
            self.snap_dir.clone(),
            meta.clone(),
        );
        let lessor = self.lessor.clone();
        let auth = self.auth.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let path = dir.join(RECEIVING_SNAPSHOT);
            // openraft hands back the file `begin_receiving_snapshot` made;
            // any other handle (a local snapshot, say) is copied there first.
            if !same_file(&received, &path) {
                use std::io::Seek;
                received
                    .seek(std::io::SeekFrom::Start(0))
                    .map_err(read_error)?;
                let mut out = std::fs::File::create(&path).map_err(io_error)?;
                std::io::copy(&mut received, &mut out).map_err(io_error)?;
                out.sync_all().map_err(io_error)?;
            }
            drop(received);
            // Check the whole file before replacing anything.
            snapshot::verify(&path).map_err(read_error)?;
            let mut reader = SnapshotReader::new(std::fs::File::open(&path).map_err(read_error)?)
                .map_err(read_error)?;
            mvcc.import_from(&mut reader).map_err(storage)?;
            lessor.restore_from(&mvcc).map_err(storage)?;
            auth.restore_from(&mvcc).map_err(storage)?;
            hub.restored();
            let applied = Applied {
                log_id: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            let mut txn = mvcc.write();
            txn.set_meta(APPLIED, &bincode::serialize(&applied).map_err(io_error)?);
            txn.commit().map_err(storage)?;
            mvcc.flush().map_err(storage)?;
            publish(&dir, &path, &meta)
        })
        .await
        .map_err(io_error)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.open_current().await
    }
}

/// Whether `file` is the file at `path`.
fn same_file(file: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Makes `file` the current snapshot, with `meta` beside it, crash-safely.
fn publish(dir: &std::path::Path, file: &std::path::Path, meta: &Meta) -> Result<(), StorageError> {
    let meta_tmp = dir.join("current.meta.tmp");
    std::fs::write(&meta_tmp, bincode::serialize(meta).map_err(io_error)?).map_err(io_error)?;
    std::fs::File::open(&meta_tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_error)?;
    std::fs::rename(file, dir.join(CURRENT_SNAPSHOT)).map_err(io_error)?;
    std::fs::rename(&meta_tmp, dir.join(CURRENT_META)).map_err(io_error)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (mvcc, dir) = (self.mvcc.clone(), self.snap_dir.clone());
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let path = dir.join(BUILDING_SNAPSHOT);
            let mut writer = SnapshotWriter::new(std::fs::File::create(&path).map_err(io_error)?)
                .map_err(io_error)?;
            // The export and the applied log id come from one consistent moment.
            let applied_key = meta_key(APPLIED);
            let mut applied = Applied::default();
            mvcc.export_to(&mut |k, v| {
                if k == applied_key.as_slice() {
                    applied = bincode::deserialize(v).map_err(std::io::Error::other)?;
                }
                writer.entry(k, v)
            })
            .map_err(storage)?;
            let (file, _) = writer.finish().map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            // openraft purges the log behind this snapshot next: what the
            // log held must be durable in the store first.
            mvcc.flush().map_err(storage)?;
            let meta = Meta {
                last_log_id: applied.log_id,
                last_membership: applied.membership,
                snapshot_id: format!("{}", applied.log_id.map(|l| l.index).unwrap_or(0)),
            };
            publish(&dir, &path, &meta)
        })
        .await
        .map_err(io_error)??;
        self.open_current()
            .await?
            .ok_or_else(|| read_error(std::io::Error::other("snapshot vanished after being built")))
    }
}
