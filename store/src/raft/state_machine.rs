//! The state machine: applies committed requests to MVCC, recording the last
//! applied log id and membership in the same atomic batch as the data.
//! Snapshots are built and installed through the [`Backend`], which makes
//! installing one atomic under a crash.

use std::sync::Arc;
use std::time::Instant;

use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use ferrocd_proto::ferrocdpb::InternalRequest;
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::backend::{Backend, Meta};
use super::background;
use super::{io_error, read_error, LogId, Request, Response, StorageError, TypeConfig};
use crate::alarm::Alarms;
use crate::auth::{AuthStore, Outcome};
use crate::kv::{self, KvError};
use crate::lease::{self, Lessor};
use crate::metrics::{self, StoreOps};
use crate::mvcc::{meta_key, KeyRange, Mvcc, MvccError, ReadTxn, ReadView, WriteTxn};
use crate::snapshot::SnapshotWriter;
use crate::watch::header_at;
use crate::watch::WatchHub;
use ferrocd_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse};

/// The metadata recording the last applied log id and the membership.
pub const APPLIED: &str = "raft_applied";
/// Chunked exports tried for a snapshot before one view is held throughout.
const SNAPSHOT_EXPORT_ATTEMPTS: usize = 3;

type Stored = StoredMembership<u64, super::Member>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    log_id: Option<LogId>,
    membership: Stored,
}

/// The state machine. Clones share the same store. Snapshots are files
/// the [`Backend`] keeps, written and read in chunks.
#[derive(Clone)]
pub struct StateMachine {
    mvcc: Arc<Mvcc>,
    lessor: Arc<Lessor>,
    auth: Arc<AuthStore>,
    alarms: Arc<Alarms>,
    hub: Arc<WatchHub>,
    backend: Arc<Backend>,
    /// What the store records as applied, kept here so apply need not read
    /// it back every time; `None` until first read, and after a snapshot
    /// replaced the store.
    applied: Option<Applied>,
}

impl StateMachine {
    /// The state machine over `mvcc`, which must live in `backend`'s state
    /// tree.
    pub fn new(
        mvcc: Arc<Mvcc>,
        lessor: Arc<Lessor>,
        auth: Arc<AuthStore>,
        alarms: Arc<Alarms>,
        hub: Arc<WatchHub>,
        backend: Arc<Backend>,
    ) -> Self {
        StateMachine {
            mvcc,
            lessor,
            auth,
            alarms,
            hub,
            backend,
            applied: None,
        }
    }

    async fn open_current(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((file, meta)) = self.backend.open_current_snapshot().map_err(read_error)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
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

/// The last applied log index and the membership, as recorded in the
/// store seen by `view` (for exports that must agree with that view).
pub fn applied_in(view: &ReadTxn<'_>) -> Result<(u64, super::Membership), MvccError> {
    let applied: Applied = match view.meta(APPLIED)? {
        None => Applied::default(),
        Some(raw) => bincode::deserialize(&raw).map_err(|e| MvccError::Storage(e.to_string()))?,
    };
    let index = applied.log_id.map_or(0, |l| l.index);
    Ok((index, applied.membership.membership().clone()))
}

/// The record saying that a store has applied the log up to `log_id`,
/// under `membership`, as (metadata name, value): what a member restored
/// from a snapshot starts from.
pub fn applied_record(
    log_id: LogId,
    membership: super::Membership,
) -> Result<(&'static str, Vec<u8>), bincode::Error> {
    let applied = Applied {
        log_id: Some(log_id),
        membership: StoredMembership::new(Some(log_id), membership),
    };
    Ok((APPLIED, bincode::serialize(&applied)?))
}

/// What apply consults besides the store: leases, users and roles, alarms
/// (each changed only by apply).
struct Parts<'a> {
    lessor: &'a Lessor,
    auth: &'a AuthStore,
    alarms: &'a Alarms,
}

/// Applies one request, of log entry `index`, inside `txn`. Deterministic:
/// reads nothing but the store and its [`Parts`].
fn execute(
    txn: &mut WriteTxn<'_>,
    parts: &Parts<'_>,
    req: &InternalRequest,
    index: u64,
) -> Response {
    let Parts {
        lessor,
        auth,
        alarms,
    } = *parts;
    // An active alarm refuses writes before anything else looks at them,
    // as etcd's capped and corrupt appliers do.
    if let Some(request) = &req.request {
        if let Err(e) = alarms.admits(request) {
            return Response::Failed(e);
        }
        alarms.note_admitted(request);
    }
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
        Some(Internal::Put(r)) => kv::put(txn, r, lessor).map(|resp| {
            let reads = r.ignore_value || r.ignore_lease || r.prev_kv;
            StoreOps {
                ranges: u64::from(reads),
                puts: 1,
                deletes: 0,
            }
            .record();
            Response::Put(resp)
        }),
        Some(Internal::DeleteRange(r)) => kv::delete_range(txn, r).map(|resp| {
            StoreOps {
                ranges: u64::from(r.prev_kv),
                puts: 0,
                deletes: 1,
            }
            .record();
            Response::DeleteRange(resp)
        }),
        Some(Internal::Txn(r)) => kv::txn(txn, r, lessor).map(|resp| {
            // etcd decides the compares in a read transaction of their
            // own, then runs the chosen ops in the write transaction.
            StoreOps {
                ranges: r.compare.len() as u64,
                ..StoreOps::default()
            }
            .record();
            StoreOps::of_txn(&resp).record();
            Response::Txn(resp)
        }),
        Some(Internal::Compaction(r)) => kv::compact(txn, r).map(Response::Compaction),
        Some(Internal::LeaseGrant(r)) => lease_grant(txn, lessor, r).map(Response::LeaseGrant),
        Some(Internal::LeaseRevoke(r)) => {
            lease_revoke(txn, lessor, r.id).map(Response::LeaseRevoke)
        }
        // Checkpoints (remaining TTLs carried across leaders) are not used:
        // a new leader gives every lease a full TTL instead.
        Some(Internal::LeaseCheckpoint(_)) | None => Ok(Response::None),
        Some(Internal::Alarm(r)) => Ok(Response::Alarm(alarms.apply(txn, r))),
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
    crate::metrics::get().leases_granted.inc();
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
    crate::metrics::get().leases_revoked.inc();
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
        let parts = Parts {
            lessor: &self.lessor,
            auth: &self.auth,
            alarms: &self.alarms,
        };
        for entry in entries {
            let mut responses = Vec::new();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Request(batch)) => {
                    // Each request of the batch is its own revision.
                    for req in &batch.requests {
                        let start = Instant::now();
                        txn.begin();
                        let index = entry.log_id.index;
                        responses.push(execute(&mut txn, &parts, req, index));
                        changes.extend(txn.end());
                        if start.elapsed() > metrics::SLOW_APPLY {
                            metrics::get().slow_apply.inc();
                        }
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
        self.hub.notify(&changes);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = tokio::fs::File::create(self.backend.receiving_path())
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
        let (mvcc, hub, lessor, backend, meta) = (
            self.mvcc.clone(),
            self.hub.clone(),
            self.lessor.clone(),
            self.backend.clone(),
            meta.clone(),
        );
        let (auth, alarms) = (self.auth.clone(), self.alarms.clone());
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            received.sync_all().map_err(io_error)?;
            let path = backend.receiving_path();
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
            let applied = Applied {
                log_id: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            let applied = bincode::serialize(&applied).map_err(io_error)?;
            let key = meta_key(APPLIED);
            // The old state stays live, whole, until `commit`.
            let mut install = backend.begin_install(&path).map_err(io_error)?;
            install.load(&key).map_err(io_error)?;
            install.seal(&key, &applied).map_err(io_error)?;
            let (tree, installed) = install.commit(meta).map_err(io_error)?;
            mvcc.replace_tree(tree).map_err(storage)?;
            lessor.restore_from(&mvcc).map_err(storage)?;
            auth.restore_from(&mvcc).map_err(storage)?;
            alarms.restore_from(&mvcc).map_err(storage)?;
            hub.restored();
            installed.forget_old().map_err(io_error)
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

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (mvcc, backend) = (self.mvcc.clone(), self.backend.clone());
        // An export of the whole store: at a lower priority than the
        // threads serving writes (see `background`).
        background::run_nicer("snapshot-build", move || -> Result<(), StorageError> {
            let (generation, path) = backend.building_path();
            // The export and the applied log id come from one consistent
            // moment. A chunked export that a compaction or an installed
            // snapshot interrupted starts over; after a few, the export
            // holds one view throughout.
            let applied_key = meta_key(APPLIED);
            let mut attempt = 0;
            let (writer, applied) = loop {
                attempt += 1;
                let file = std::fs::File::create(&path).map_err(io_error)?;
                let mut writer = SnapshotWriter::new(background::SyncedAsItGrows::new(file))
                    .map_err(io_error)?;
                let mut applied = Applied::default();
                let mut sink = |k: &[u8], v: &[u8]| {
                    if k == applied_key.as_slice() {
                        applied = bincode::deserialize(v).map_err(std::io::Error::other)?;
                    }
                    writer.entry(k, v)
                };
                let exported = if attempt <= SNAPSHOT_EXPORT_ATTEMPTS {
                    mvcc.export_to(&mut sink)
                } else {
                    mvcc.export_in_one_view(&mut sink)
                };
                match exported {
                    Ok(()) => break (writer, applied),
                    Err(MvccError::Changed) => continue,
                    Err(e) => return Err(storage(e)),
                }
            };
            let (file, _) = writer.finish().map_err(io_error)?;
            file.finish().map_err(io_error)?;
            // openraft purges the log behind this snapshot next: what the
            // log held must be durable in the store first.
            mvcc.flush().map_err(storage)?;
            let meta = Meta {
                last_log_id: applied.log_id,
                last_membership: applied.membership,
                snapshot_id: format!("{}", applied.log_id.map(|l| l.index).unwrap_or(0)),
            };
            backend
                .publish_snapshot(generation, &path, meta)
                .map_err(io_error)
        })
        .await
        .map_err(io_error)??;
        self.open_current()
            .await?
            .ok_or_else(|| read_error(std::io::Error::other("snapshot vanished after being built")))
    }
}
