//! Multi-version key-value storage on sled.
//!
//! Every change is written under its [`Revision`]; the in-memory
//! [`KeyIndex`] maps keys to revisions. Reads at any revision newer than the
//! compacted one see the store as it was then. All writes of one raft apply
//! batch, including the caller's metadata (the last applied log id), land in
//! one atomic sled batch, written by a thread of its own ([`committer`])
//! together with the batches of other applies; until then views read them
//! [staged](staged).

mod checkpoint;
mod committer;
mod copy;
mod export;
mod import;
mod index;
mod leases;
mod reclaim;
mod revision;
mod scan;
mod staged;
mod view;

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};

use committer::StateLock;
use staged::{Op, Staged};

use ferrocd_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;

pub use checkpoint::{CheckpointError, Written};
pub use export::StoredRevision;
pub use import::{ImportError, Importer};
pub use index::{KeyIndex, KeyRange};
pub use revision::Revision;
pub use view::PinnedView;

const REV_PREFIX: u8 = b'r';
const META_PREFIX: u8 = b'm';
const META_CURRENT: &str = "current_rev";
const META_COMPACTED: &str = "compacted_rev";

const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

/// Errors of reads and writes against the store.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("mvcc: storage: {0}")]
    Storage(String),
    /// A compaction or an installed snapshot changed the store during a
    /// scan that cannot start over by itself.
    #[error("mvcc: the store changed during the scan")]
    Changed,
}

impl From<sled::Error> for MvccError {
    fn from(e: sled::Error) -> Self {
        MvccError::Storage(e.to_string())
    }
}

/// Receives exported entries: (tree key, value).
pub type EntrySink<'a> = dyn FnMut(&[u8], &[u8]) -> std::io::Result<()> + 'a;

/// How to read a range.
#[derive(Clone, Copy, Debug, Default)]
pub struct RangeOptions {
    /// Revision to read at; 0 or less means the view's own revision.
    pub rev: i64,
    /// Most key-values to return; 0 means all.
    pub limit: usize,
    /// Only count, return no key-values.
    pub count_only: bool,
}

/// Result of a range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range at the revision, regardless of `limit`.
    pub count: usize,
    /// The revision of the view the read ran in (what response headers carry).
    pub rev: i64,
}

/// Reads shared by read-only views and write transactions.
pub trait ReadView {
    /// The revision this view sees.
    fn rev(&self) -> i64;

    /// Keys in `range` as of `opts.rev`.
    fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult, MvccError>;
}

struct State {
    /// The tree the store lives in; replaced whole when a snapshot is
    /// installed, together with everything derived from it.
    tree: sled::Tree,
    index: KeyIndex,
    leases: leases::LeaseIndex,
    current: i64,
    compacted: i64,
    /// Counts replacements of the tree, so a reader that spans several
    /// views can tell it still reads the same store.
    epoch: u64,
    /// The last batch handed to the committer (see [`committer`]).
    queued: u64,
}

/// The MVCC store. Cheap to share behind an `Arc`; reads run concurrently,
/// writes are serialized by the raft apply loop.
pub struct Mvcc {
    /// Shared with the reclaimer, which prunes the index after compactions.
    state: Arc<StateLock>,
    /// The newest and the compacted revision, readable without a view
    /// (every response header reads the revision).
    current: AtomicI64,
    compacted: AtomicI64,
    /// Finishes compactions: prunes the index, deletes what they freed.
    reclaimer: reclaim::Reclaimer,
}

impl Mvcc {
    /// Opens the store in `tree`, rebuilding the key index from disk.
    pub fn open(tree: sled::Tree) -> Result<Self, MvccError> {
        Ok(Self::with_state(load_state(&tree)?))
    }

    fn with_state(state: State) -> Self {
        Mvcc {
            current: AtomicI64::new(state.current),
            compacted: AtomicI64::new(state.compacted),
            state: Arc::new(StateLock::new(state)),
            reclaimer: reclaim::Reclaimer::start(),
        }
    }

    /// Makes `tree` the store, as one step for readers and writers: they
    /// see the old tree or the new one, never a mix. For installing a
    /// snapshot that was loaded into `tree` and made durable beforehand.
    /// Every read of the tree holds the state lock, so once this returns
    /// nothing reads the old tree any more and it may be dropped.
    pub fn replace_tree(&self, tree: sled::Tree) -> Result<(), MvccError> {
        let mut loaded = load_state(&tree)?;
        let mut state = self.state.write();
        loaded.epoch = state.epoch + 1;
        loaded.queued = state.queued;
        self.current.store(loaded.current, Ordering::SeqCst);
        self.compacted.store(loaded.compacted, Ordering::SeqCst);
        *state = loaded;
        self.state.new_epoch(&state);
        Ok(())
    }

    /// A consistent read-only view at the current revision.
    pub fn read(&self) -> ReadTxn<'_> {
        ReadTxn {
            state: self.state.read_fresh(),
            staged: self.state.staged(),
        }
    }

    /// Starts writing. Holds the write lock until committed or dropped.
    pub fn write(&self) -> WriteTxn<'_> {
        let state = self.state.write_fresh();
        let begin = state.current;
        WriteTxn {
            state,
            mvcc: self,
            compaction: None,
            ops: Vec::new(),
            pending: HashMap::new(),
            begin,
            sub: 0,
            events: Vec::new(),
        }
    }

    /// The newest revision.
    pub fn current_revision(&self) -> i64 {
        self.current.load(Ordering::SeqCst)
    }

    /// The revision of the last compaction, or -1 if none happened.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted.load(Ordering::SeqCst)
    }

    /// Number of keys the index tracks (live or with history).
    pub fn key_count(&self) -> usize {
        self.state.read_fresh().index.len()
    }

    /// The live keys attached to `lease`, in key order.
    pub fn lease_keys(&self, lease: i64) -> Vec<Vec<u8>> {
        self.state.read_fresh().leases.keys(lease)
    }

    /// Metadata entries whose names start with `prefix`, as (name, value).
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, sled::IVec)>, MvccError> {
        self.read().meta_with_prefix(prefix)
    }

    /// Waits until the records freed by the compactions applied so far
    /// are deleted.
    pub fn wait_reclaimed(&self) {
        self.reclaimer.wait_idle();
    }

    /// Waits until the batches of every apply so far are in the tree.
    pub fn settle(&self) {
        drop(self.state.read());
    }

    /// Makes everything committed so far durable.
    pub fn flush(&self) -> Result<(), MvccError> {
        // Every tree of the database is flushed at once; the handle may
        // outlive a replacement of the store's tree without harm.
        let tree = self.state.read().tree.clone();
        tree.flush()?;
        Ok(())
    }

    /// Reads metadata stored by [`WriteTxn::set_meta`].
    pub fn meta(&self, name: &str) -> Result<Option<sled::IVec>, MvccError> {
        self.read().meta(name)
    }
}

/// A read-only view.
pub struct ReadTxn<'a> {
    state: RwLockReadGuard<'a, State>,
    staged: &'a Staged,
}

impl ReadTxn<'_> {
    /// The revision of the last compaction.
    pub fn compacted(&self) -> i64 {
        self.state.compacted
    }

    /// The changes to keys in `range` at main revisions `from..=to`, in
    /// revision order, at most `max_revs` revisions' worth; with the last
    /// revision scanned. Fails with `Compacted` when `from` is below the
    /// compacted revision (some of those changes are gone).
    pub fn history(
        &self,
        range: KeyRange<'_>,
        from: i64,
        to: i64,
        max_revs: i64,
    ) -> Result<(Vec<Event>, i64), MvccError> {
        if from < self.state.compacted {
            return Err(MvccError::Compacted);
        }
        let to = to
            .min(self.state.current)
            .min(from.saturating_add(max_revs - 1));
        let mut events = Vec::new();
        if to < from {
            return Ok((events, from - 1));
        }
        let start = rev_key(Revision::new(from, 0));
        let end = rev_key(Revision::new(to + 1, 0));
        for item in self.staged.range(
            self.state.epoch,
            &self.state.tree,
            Bound::Included(&start),
            Bound::Excluded(&end),
        ) {
            let (_, v) = item?;
            let (kind, kv) = decode_value(&v)?;
            if !range.contains(&kv.key) {
                continue;
            }
            // A delete at the compacted revision itself was freed by the
            // compaction, though perhaps not deleted yet.
            if kind == KIND_TOMBSTONE && kv.mod_revision <= self.state.compacted {
                continue;
            }
            let r#type = if kind == KIND_TOMBSTONE {
                EventType::Delete
            } else {
                EventType::Put
            };
            events.push(Event {
                r#type: r#type as i32,
                kv: Some(kv),
                prev_kv: None,
            });
        }
        Ok((events, to))
    }

    /// The value `key` had at main revision `rev`, if any and not compacted.
    pub fn get_at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        if rev < self.state.compacted || rev > self.state.current {
            return None;
        }
        let r = self.state.index.get(key, rev)?;
        self.load(r).ok()
    }

    fn load(&self, rev: Revision) -> Result<KeyValue, MvccError> {
        load(self.staged, &self.state, &HashMap::new(), rev)
    }
}

impl ReadView for ReadTxn<'_> {
    fn rev(&self) -> i64 {
        self.state.current
    }

    fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult, MvccError> {
        range_at(&self.state, self.state.current, range, opts, |rev| {
            self.load(rev)
        })
    }
}

/// A write transaction covering one or more main revisions. Changes become
/// visible to other readers, and durable in the tree, on [`WriteTxn::commit`].
pub struct WriteTxn<'a> {
    state: RwLockWriteGuard<'a, State>,
    mvcc: &'a Mvcc,
    /// The compaction in this transaction, finished once it is written.
    compaction: Option<i64>,
    /// The writes of the transaction, in order.
    ops: Vec<Op>,
    /// Values written in this transaction, not yet in the tree.
    pending: HashMap<Revision, KeyValue>,
    /// Revision before the current main revision's changes.
    begin: i64,
    /// Changes made so far in the current main revision.
    sub: i64,
    /// Changes of the current main revision, for watchers.
    events: Vec<Event>,
}

impl WriteTxn<'_> {
    /// Starts a new main revision (one request).
    pub fn begin(&mut self) {
        self.begin = self.state.current;
        self.sub = 0;
        self.events.clear();
    }

    /// Ends the current main revision: returns its revision if it changed
    /// anything, with its events in order.
    pub fn end(&mut self) -> Option<(i64, Vec<Event>)> {
        if self.sub == 0 {
            return None;
        }
        self.state.current = self.begin + 1;
        self.begin = self.state.current;
        self.sub = 0;
        Some((self.state.current, std::mem::take(&mut self.events)))
    }

    /// Whether the current main revision has changes so far.
    pub fn changed(&self) -> bool {
        self.sub > 0
    }

    /// Writes `key`; returns the revision it gets.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> i64 {
        let main = self.begin + 1;
        let rev = Revision::new(main, self.sub);
        self.sub += 1;
        let (create_revision, version) = match self.state.index.live(key) {
            Some(live) => (live.created, live.version + 1),
            None => (main, 1),
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: main,
            version,
            value,
            lease,
        };
        self.ops.push((
            rev_key(rev)[..].into(),
            Some(encode_value(KIND_PUT, &kv).into()),
        ));
        self.state.index.put(key, rev);
        self.state.leases.attach(key, lease);
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv.clone()),
            prev_kv: None,
        });
        self.pending.insert(rev, kv);
        main
    }

    /// Deletes every live key in `range`; returns how many were deleted.
    pub fn delete_range(&mut self, range: KeyRange<'_>) -> i64 {
        let (keys, _) = self.state.index.range(range, self.view_rev(), 0);
        let main = self.begin + 1;
        for (key, _) in &keys {
            let rev = Revision::new(main, self.sub);
            self.sub += 1;
            let kv = KeyValue {
                key: key.clone(),
                mod_revision: main,
                ..Default::default()
            };
            self.ops.push((
                rev_key(rev)[..].into(),
                Some(encode_value(KIND_TOMBSTONE, &kv).into()),
            ));
            self.state.index.tombstone(key, rev);
            self.state.leases.detach(key);
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv),
                prev_kv: None,
            });
        }
        keys.len() as i64
    }

    /// Compacts history before `at`; its space is freed after the commit.
    pub fn compact(&mut self, at: i64) -> Result<(), MvccError> {
        if at <= self.state.compacted {
            return Err(MvccError::Compacted);
        }
        if at > self.state.current {
            return Err(MvccError::FutureRevision);
        }
        // Reads below `at` are refused from now on; the index is pruned
        // and the freed records deleted after the commit, in steps.
        self.compaction = Some(at);
        self.state.compacted = at;
        self.ops.push((
            meta_key(META_COMPACTED).into(),
            Some(at.to_be_bytes()[..].into()),
        ));
        Ok(())
    }

    /// The revision of the last compaction.
    pub fn compacted(&self) -> i64 {
        self.state.compacted
    }

    /// The live keys attached to `lease`, in key order.
    pub fn lease_keys(&self, lease: i64) -> Vec<Vec<u8>> {
        self.state.leases.keys(lease)
    }

    /// Removes caller metadata atomically with this transaction's data.
    pub fn remove_meta(&mut self, name: &str) {
        self.ops.push((meta_key(name).into(), None));
    }

    /// Stores caller metadata atomically with this transaction's data.
    pub fn set_meta(&mut self, name: &str, value: &[u8]) {
        self.ops.push((meta_key(name).into(), Some(value.into())));
    }

    /// Makes everything visible to readers and hands it to the committing
    /// thread, which writes it to the tree in one atomic batch (with other
    /// transactions' writes) after this returns. Fails with an earlier
    /// batch sled refused.
    pub fn commit(mut self) -> Result<(), MvccError> {
        let current = self.state.current;
        self.ops.push((
            meta_key(META_CURRENT).into(),
            Some(current.to_be_bytes()[..].into()),
        ));
        let ops = std::mem::take(&mut self.ops);
        self.mvcc.state.submit(&mut self.state, ops)?;
        self.mvcc.current.store(current, Ordering::SeqCst);
        self.mvcc
            .compacted
            .store(self.state.compacted, Ordering::SeqCst);
        if let Some(at) = self.compaction.take() {
            self.mvcc
                .reclaimer
                .compact(&self.mvcc.state, self.state.epoch, at);
        }
        Ok(())
    }

    fn view_rev(&self) -> i64 {
        if self.sub > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }
}

impl ReadView for WriteTxn<'_> {
    fn rev(&self) -> i64 {
        self.view_rev()
    }

    fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult, MvccError> {
        range_at(&self.state, self.view_rev(), range, opts, |rev| {
            load(self.mvcc.state.staged(), &self.state, &self.pending, rev)
        })
    }
}

fn range_at(
    state: &State,
    view_rev: i64,
    range: KeyRange<'_>,
    opts: RangeOptions,
    load: impl Fn(Revision) -> Result<KeyValue, MvccError>,
) -> Result<RangeResult, MvccError> {
    if opts.rev > view_rev {
        return Err(MvccError::FutureRevision);
    }
    let rev = if opts.rev <= 0 { view_rev } else { opts.rev };
    if rev < state.compacted {
        return Err(MvccError::Compacted);
    }
    let limit = if opts.count_only { 1 } else { opts.limit };
    let (revs, count) = state.index.range(range, rev, limit);
    let kvs = if opts.count_only {
        Vec::new()
    } else {
        revs.into_iter()
            .map(|(_, r)| load(r))
            .collect::<Result<_, _>>()?
    };
    Ok(RangeResult {
        kvs,
        count,
        rev: view_rev,
    })
}

/// The record at `rev`: written in this transaction (`pending`), staged,
/// or in the tree.
fn load(
    staged: &Staged,
    state: &State,
    pending: &HashMap<Revision, KeyValue>,
    rev: Revision,
) -> Result<KeyValue, MvccError> {
    if let Some(kv) = pending.get(&rev) {
        return Ok(kv.clone());
    }
    let raw = staged
        .get(state.epoch, &state.tree, &rev_key(rev))?
        .ok_or_else(|| corrupt("index names a revision missing on disk"))?;
    Ok(decode_value(&raw)?.1)
}

fn load_state(tree: &sled::Tree) -> Result<State, MvccError> {
    let mut index = KeyIndex::new();
    let mut leases = leases::LeaseIndex::default();
    let mut last_seen = 1;
    // Deletes whose puts are gone: what a crash left of a compaction's
    // freed records (deleted oldest first), to delete too.
    let mut orphans = Vec::new();
    for item in tree.scan_prefix([REV_PREFIX]) {
        let (k, v) = item?;
        let rev = Revision::from_bytes(&k[1..]).ok_or_else(|| corrupt("revision key"))?;
        let (kind, kv) = decode_value(&v)?;
        if kind == KIND_TOMBSTONE {
            if !index.tombstone(&kv.key, rev) {
                orphans.push(rev);
            }
            leases.detach(&kv.key);
        } else {
            leases.attach(&kv.key, kv.lease);
            index.restore(&kv.key, rev, kv.create_revision, Some(kv.version));
        }
        last_seen = rev.main;
    }
    let current = read_i64(tree, META_CURRENT)?.unwrap_or(1).max(last_seen);
    let compacted = read_i64(tree, META_COMPACTED)?.unwrap_or(-1);
    if compacted > 0 {
        // Finish a compaction a crash may have interrupted.
        let mut batch = sled::Batch::default();
        let orphans = orphans.into_iter().filter(|r| r.main <= compacted);
        for rev in index.compact(compacted).into_iter().chain(orphans) {
            batch.remove(&rev_key(rev)[..]);
        }
        tree.apply_batch(batch)?;
    }
    Ok(State {
        tree: tree.clone(),
        index,
        leases,
        current,
        compacted,
        epoch: 0,
        queued: 0,
    })
}

fn rev_key(rev: Revision) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = REV_PREFIX;
    k[1..].copy_from_slice(&rev.to_bytes());
    k
}

/// The tree key under which metadata `name` is stored.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(META_PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

fn encode_value(kind: u8, kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + kv.encoded_len());
    out.push(kind);
    kv.encode(&mut out).expect("Vec grows as needed");
    out
}

fn decode_value(raw: &[u8]) -> Result<(u8, KeyValue), MvccError> {
    let (&kind, rest) = raw.split_first().ok_or_else(|| corrupt("empty value"))?;
    let kv = KeyValue::decode(rest).map_err(|_| corrupt("undecodable key-value"))?;
    Ok((kind, kv))
}

fn read_i64(tree: &sled::Tree, name: &str) -> Result<Option<i64>, MvccError> {
    match tree.get(meta_key(name))? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| corrupt(name))?;
            Ok(Some(i64::from_be_bytes(bytes)))
        }
    }
}

fn corrupt(what: &str) -> MvccError {
    MvccError::Storage(format!("corrupt data: {what}"))
}

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod tests;
