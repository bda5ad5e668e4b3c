//! The raft log: entries in append-only segment files (`wal.rs`), the vote,
//! commit index and purge point in a small sled database. Appends are
//! acknowledged only after `fdatasync`, done by a thread of its own
//! (`wal-sync`): it syncs as soon as an append is queued, so a lone write
//! waits for no batch, and once for every append that queued up while the
//! previous sync ran, so busy writers share fsyncs.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, OptionalSend, RaftLogReader, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::mpsc;

use super::wal::{Wal, WalError};
use super::{io_error, read_error, LogId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";
/// Reads of at most this many entries, within this many of the newest, are
/// served from the page cache without leaving the async runtime.
const NEAR_TAIL: u64 = 64;
/// Bytes of entries replication puts in one append, as etcd's 1 MiB
/// `MaxSizePerMsg` bounds its messages (a quarter of it: openraft waits
/// for each append's answer, within a heartbeat interval, before the
/// next).
const APPEND_BYTES: u64 = 256 << 10;

/// The log store. Clones share the same log.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    meta: sled::Tree,
    wal: Arc<Mutex<Log>>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

struct Log {
    wal: Wal,
    /// The id of the newest entry (or of the purge point when empty).
    last: Option<LogId>,
}

/// Why the log could not be opened. A corrupt segment keeps its own error,
/// so that the member's exit message names the file and offset plainly.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<OpenError> for StorageError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Wal(e) => read_error(e),
            OpenError::Storage(e) => e,
        }
    }
}

impl LogStore {
    /// Opens the log: metadata in `db`, entries under `dir`; starts the
    /// syncing thread, which ends when the last clone of the store is
    /// dropped.
    pub fn open(db: &sled::Db, dir: &Path) -> Result<Self, OpenError> {
        let meta = db.open_tree("raft_meta").map_err(read_error)?;
        let purged: Option<LogId> = get(&meta, LAST_PURGED)?;
        let wal = Wal::open(dir, purged.map(|p| p.index))?;
        let last = match wal.last_index() {
            Some(i) => {
                let raw = wal.read(i, i + 1).map_err(read_error)?;
                let entry: Entry<TypeConfig> = bincode::deserialize(&raw[0]).map_err(read_error)?;
                Some(entry.log_id)
            }
            None => purged,
        };
        let wal = Arc::new(Mutex::new(Log { wal, last }));
        let (tx, rx) = mpsc::channel();
        let syncing = wal.clone();
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || sync_loop(&syncing, &rx))
            .map_err(io_error)?;
        Ok(LogStore {
            db: db.clone(),
            meta,
            wal,
            flusher: tx,
        })
    }

    /// The id of the newest entry written (or of the purge point when the
    /// log is empty).
    pub fn last_log_id(&self) -> Option<LogId> {
        self.log().last
    }

    /// Called at start, before raft reads the vote: a member that led
    /// before it stopped does not take up that leadership again. openraft
    /// 0.9 would restore it as leader in the same term, with the commit
    /// index last written (not flushed at every commit), and answer read
    /// indexes from it: a linearizable read could miss a write it had
    /// acknowledged before the crash (found by the randomized fault runs).
    /// As a follower it waits for a leader that commits an entry of a new
    /// term first. Stepping down is always safe; the vote's term is kept.
    pub fn step_down(&self) -> Result<(), StorageError> {
        if let Some(mut vote) = get::<Vote<u64>>(&self.meta, VOTE)? {
            if vote.committed {
                vote.committed = false;
                self.put_meta(VOTE, &vote)?;
                self.db.flush().map_err(io_error)?;
            }
        }
        Ok(())
    }

    /// Appends `entry` after the last one and syncs it, outside raft (for
    /// `--force-new-cluster`, before raft starts).
    pub fn append_synced(&self, entry: &Entry<TypeConfig>) -> Result<(), StorageError> {
        let raw = bincode::serialize(entry).map_err(io_error)?;
        let mut log = self.log();
        log.wal
            .append(&[(entry.log_id.index, raw)])
            .map_err(io_error)?;
        if let Some(h) = log.wal.sync_handle() {
            h.sync().map_err(io_error)?;
        }
        log.last = Some(entry.log_id);
        Ok(())
    }

    /// Leaves the log as a clean stop should, once raft has stopped: no
    /// preallocated zeros after the last entry. Not left to the last
    /// clone's drop, which may be on the syncing thread, still running
    /// when the process exits.
    pub fn close(&self) -> Result<(), StorageError> {
        self.log().wal.close().map_err(io_error)
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `start..end` is a few of the newest entries.
    fn near_tail(&self, start: u64, end: u64) -> bool {
        let last = self.log().last.map_or(0, |l| l.index);
        end.saturating_sub(start) <= NEAR_TAIL && start.saturating_add(NEAR_TAIL) > last
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let raw = bincode::serialize(value).map_err(io_error)?;
        self.meta.insert(key, raw).map_err(io_error)?;
        Ok(())
    }

    async fn flush_meta(&self) -> Result<(), StorageError> {
        self.db.flush_async().await.map_err(io_error)?;
        Ok(())
    }
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StorageError> {
    match tree.get(key).map_err(read_error)? {
        None => Ok(None),
        Some(raw) => Ok(Some(bincode::deserialize(&raw).map_err(read_error)?)),
    }
}

/// Runs `f`, which waits for the disk, telling a multi-threaded runtime
/// to move its other tasks away meanwhile (a single-threaded one, in
/// tests, just runs it).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Waits for appends, fsyncs once for all that queued up meanwhile, then
/// acknowledges them in order. Runs on its own thread: the fsync starts the
/// moment the first append is queued, with no hand-off to a blocking pool.
fn sync_loop(wal: &Mutex<Log>, rx: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        waiting.extend(rx.try_iter());
        let result = sync(wal);
        for cb in waiting.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            cb.log_io_completed(r);
        }
    }
}

/// Makes every append so far durable. A segment is synced before the next
/// one is started, so syncing the newest covers all.
fn sync(wal: &Mutex<Log>) -> std::io::Result<()> {
    let handle = wal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .wal
        .sync_handle();
    match handle {
        Some(h) => h.sync(),
        None => Ok(()),
    }
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
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.read_entries(start, end, u64::MAX).await
    }

    /// What replication sends a follower in one append: entries from
    /// `start` up to about [`APPEND_BYTES`] (at least one), so a follower
    /// far behind gets many small entries per round trip and never one
    /// huge message.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.read_entries(start, end, APPEND_BYTES).await
    }
}

impl LogStore {
    /// Entries `start..end`, stopping after the one that reaches
    /// `max_bytes` of encoded entries.
    async fn read_entries(
        &self,
        start: u64,
        end: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let raw = if self.near_tail(start, end) {
            // Replication of what was just appended: still in the page
            // cache, so read here, without a hand-off to the blocking pool.
            self.log()
                .wal
                .read_limited(start, end, max_bytes)
                .map_err(read_error)?
        } else {
            // Disk reads (a follower catching up may need many entries):
            // off the async runtime.
            let wal = self.wal.clone();
            tokio::task::spawn_blocking(move || {
                wal.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .wal
                    .read_limited(start, end, max_bytes)
            })
            .await
            .map_err(read_error)?
            .map_err(read_error)?
        };
        raw.iter()
            .map(|r| bincode::deserialize(r).map_err(read_error))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = get(&self.meta, LAST_PURGED)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: self.log().last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)?;
        self.flush_meta().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        get(&self.meta, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: after a crash the committed index is only an earlier
        // (still correct) value, and the leader re-establishes the rest.
        if let Some(c) = committed {
            crate::metrics::get()
                .proposals_committed
                .set(c.index as i64);
        }
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get::<Option<LogId>>(&self.meta, COMMITTED)?.flatten())
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
        let mut records = Vec::new();
        let mut last = None;
        for entry in entries {
            records.push((
                entry.log_id.index,
                bincode::serialize(&entry).map_err(io_error)?,
            ));
            last = Some(entry.log_id);
        }
        let append = || -> Result<(), StorageError> {
            let mut log = self.log();
            log.wal.append(&records).map_err(io_error)?;
            if last.is_some() {
                log.last = last;
            }
            Ok(())
        };
        // Starting a new segment syncs the one before: only then is the
        // append worth moving the runtime's other tasks away for (doing so
        // for every append would hand the worker to another thread each
        // time).
        if self.log().wal.rolls_next() {
            blocking(append)?;
        } else {
            append()?;
        }
        if let Err(mpsc::SendError(cb)) = self.flusher.send(callback) {
            // The syncing thread is gone (it panicked): sync here instead.
            cb.log_io_completed(blocking(|| sync(&self.wal)));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let wal = self.wal.clone();
        let last_purged: Option<LogId> = get(&self.meta, LAST_PURGED)?;
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let mut log = wal.lock().unwrap_or_else(|e| e.into_inner());
            log.wal.truncate(log_id.index).map_err(io_error)?;
            log.last = match log.wal.last_index() {
                Some(i) => {
                    let raw = log.wal.read(i, i + 1).map_err(read_error)?;
                    let entry: Entry<TypeConfig> =
                        bincode::deserialize(&raw[0]).map_err(read_error)?;
                    Some(entry.log_id)
                }
                None => last_purged,
            };
            Ok(())
        })
        .await
        .map_err(io_error)?
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is durable before any file goes.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.flush_meta().await?;
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = wal.lock().unwrap_or_else(|e| e.into_inner());
            log.wal.purge(log_id.index).map_err(io_error)?;
            if log.last.is_none_or(|l| l.index <= log_id.index) {
                log.last = Some(log_id);
            }
            Ok(())
        })
        .await
        .map_err(io_error)?
    }
}
