//! The state machine: applies committed requests to MVCC, recording the last
//! applied log id and membership in the same atomic batch as the data.

use std::io::Cursor;
use std::sync::Arc;

use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use super::{io_error, read_error, LogId, Request, Response, StorageError, TypeConfig};
use crate::kv::{self, KvError, NoLeases};
use crate::mvcc::{meta_key, Mvcc, MvccError, WriteTxn};

const APPLIED: &str = "raft_applied";
const SNAPSHOT_META: &str = "raft_snapshot_meta";

type Membership = StoredMembership<u64, openraft::BasicNode>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    log_id: Option<LogId>,
    membership: Membership,
}

/// The state machine. Clones share the same store.
#[derive(Clone)]
pub struct StateMachine {
    mvcc: Arc<Mvcc>,
}

impl StateMachine {
    pub fn new(mvcc: Arc<Mvcc>) -> Self {
        StateMachine { mvcc }
    }

    fn applied(&self) -> Result<Applied, StorageError> {
        match self.mvcc.meta(APPLIED).map_err(read_error)? {
            None => Ok(Applied::default()),
            Some(raw) => bincode::deserialize(&raw).map_err(read_error),
        }
    }
}

/// Applies one request inside `txn`. Deterministic: reads nothing but the store.
fn execute(txn: &mut WriteTxn<'_>, Request(req): &Request) -> Response {
    let result = match &req.request {
        Some(Internal::Put(r)) => kv::put(txn, r, &NoLeases).map(Response::Put),
        Some(Internal::DeleteRange(r)) => kv::delete_range(txn, r).map(Response::DeleteRange),
        Some(Internal::Txn(r)) => kv::txn(txn, r, &NoLeases).map(Response::Txn),
        Some(Internal::Compaction(r)) => kv::compact(txn, r).map(Response::Compaction),
        // Lease requests are refused until the lease service exists; the API
        // never proposes them, so this only guards against foreign logs.
        Some(Internal::LeaseGrant(_)) | Some(Internal::LeaseRevoke(_)) | Some(Internal::LeaseCheckpoint(_)) => {
            Err(KvError::LeaseNotFound)
        }
        None => Ok(Response::None),
    };
    result.unwrap_or_else(Response::Failed)
}

fn storage(e: MvccError) -> StorageError {
    io_error(e)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let a = self.applied()?;
        Ok((a.log_id, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied()?;
        let mut txn = self.mvcc.write();
        let mut out = Vec::new();
        for entry in entries {
            txn.begin();
            let resp = match &entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Normal(req) => execute(&mut txn, req),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Response::None
                }
            };
            txn.end();
            applied.log_id = Some(entry.log_id);
            out.push(resp);
        }
        txn.set_meta(APPLIED, &bincode::serialize(&applied).map_err(io_error)?);
        txn.commit().map_err(storage)?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = bincode::deserialize(snapshot.get_ref()).map_err(read_error)?;
        self.mvcc.import(entries).map_err(storage)?;
        let applied = Applied {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let mut txn = self.mvcc.write();
        txn.set_meta(APPLIED, &bincode::serialize(&applied).map_err(io_error)?);
        txn.set_meta(SNAPSHOT_META, &bincode::serialize(meta).map_err(io_error)?);
        txn.commit().map_err(storage)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Snapshots are built on demand from the live store; there is no
        // stored one to hand out (single-member clusters never send one).
        Ok(None)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // The export and the applied id come from one locked moment.
        let entries = self.mvcc.export().map_err(storage)?;
        let applied: Applied = entries
            .iter()
            .find(|(k, _)| *k == meta_key(APPLIED))
            .map(|(_, v)| bincode::deserialize(v))
            .transpose()
            .map_err(read_error)?
            .unwrap_or_default();
        let data = bincode::serialize(&entries).map_err(io_error)?;
        let meta = SnapshotMeta {
            last_log_id: applied.log_id,
            last_membership: applied.membership,
            snapshot_id: format!("{}", applied.log_id.map(|l| l.index).unwrap_or(0)),
        };
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
