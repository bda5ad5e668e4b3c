//! The raft log and vote, in sled trees. Appends are acknowledged only after
//! fsync; a background flusher groups the fsyncs of many appends.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, OptionalSend, RaftLogReader, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{io_error, read_error, LogId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

/// The log store. Clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens the log in `db` and starts its flusher task.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flush_loop(db.clone(), rx));
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            flusher: tx,
        })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(read_error)? {
            None => Ok(None),
            Some(raw) => Ok(Some(bincode::deserialize(&raw).map_err(read_error)?)),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let raw = bincode::serialize(value).map_err(io_error)?;
        self.meta.insert(key, raw).map_err(io_error)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await.map_err(io_error)?;
        Ok(())
    }
}

/// Waits for appended entries, fsyncs once for all that queued up meanwhile,
/// then acknowledges them in order.
async fn flush_loop(db: sled::Db, mut rx: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        waiting.push(first);
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = db.flush_async().await;
        for cb in waiting.drain(..) {
            let r = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            cb.log_io_completed(r);
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let iter = match range.end_bound() {
            Bound::Included(i) => self.log.range(index_key(start)..=index_key(*i)),
            Bound::Excluded(i) => self.log.range(index_key(start)..index_key(*i)),
            Bound::Unbounded => self.log.range(index_key(start)..),
        };
        iter.map(|item| {
            let (_, raw) = item.map_err(read_error)?;
            bincode::deserialize(&raw).map_err(read_error)
        })
        .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = match self.log.last().map_err(read_error)? {
            Some((_, raw)) => Some(
                bincode::deserialize::<Entry<TypeConfig>>(&raw)
                    .map_err(read_error)?
                    .log_id,
            ),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: after a crash the committed index is only an earlier
        // (still correct) value, and the leader re-establishes the rest.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let raw = bincode::serialize(&entry).map_err(io_error)?;
            batch.insert(&index_key(entry.log_id.index)[..], raw);
        }
        self.log.apply_batch(batch).map_err(io_error)?;
        if let Err(mpsc::error::SendError(cb)) = self.flusher.send(callback) {
            // The flusher is gone (shutting down): flush here instead.
            let r = self
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string()));
            cb.log_io_completed(r);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (k, _) = item.map_err(read_error)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_error)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(LAST_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (k, _) = item.map_err(read_error)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_error)?;
        self.flush().await
    }
}
