//! Where the state machine keeps its data, and how a snapshot replaces it
//! atomically under a crash.
//!
//! The store lives in one sled tree of the state database, and snapshots in
//! files under `snap/`, each named after a *generation*. One small record in
//! the database's default tree, [`Live`], names the live tree and the
//! current snapshot (file and metadata). Changing it is one sled insert and
//! a flush, so it is the single atomic step of an install (and of publishing
//! a built snapshot): before it, the old state is live, whole; after it, the
//! new one. At open, trees and files that the record does not name are
//! leftovers of an install or a build cut short, and are deleted. The model
//! is etcd's, which loads a received snapshot into a new backend file and
//! switches to it with one rename.
//!
//! An install, step by step ([`Install`]): the received file is verified and
//! moved to its generation's name; its entries are streamed in chunks into a
//! fresh tree, the applied log id last; that tree is flushed; then [`Live`]
//! is switched.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};

use super::Member;
use crate::snapshot::{self, SnapshotReader};

/// Snapshot metadata as openraft has it.
pub type Meta = openraft::SnapshotMeta<u64, Member>;

/// The key of the [`Live`] record in the database's default tree.
const LIVE: &[u8] = b"ferrocd_live";
/// The tree of generation 0: where the store lived before generations.
const FIRST_TREE: &str = "state";
/// Entries written to a fresh tree per batch while loading a snapshot.
const CHUNK: usize = 10_000;

/// Why the state machine's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("state machine storage files")]
    Io(#[from] io::Error),
    #[error("state machine database")]
    Sled(#[from] sled::Error),
    #[error("state machine storage record")]
    Encoding(#[from] bincode::Error),
}

/// What is live: one record, so that switching is one atomic write.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Live {
    /// Generation of the live state tree.
    tree: u64,
    /// The current snapshot: its file's generation and its metadata.
    snapshot: Option<(u64, Meta)>,
}

/// Opens a state database at a path, with the member's settings.
pub type OpenDb = Box<dyn Fn(&Path) -> Result<sled::Db, sled::Error> + Send + Sync>;

/// The state machine's storage: the live tree and the current snapshot.
pub struct Backend {
    /// The state database; replaced whole by a defragmentation.
    db: RwLock<sled::Db>,
    snap_dir: PathBuf,
    live: Mutex<Live>,
    /// The next generation to hand out (above every one named or on disk).
    next: AtomicU64,
    /// Where databases live and how to open one, for defragmenting (`None`
    /// for a backend opened on a database given by its caller).
    place: Option<(PathBuf, OpenDb)>,
    /// Held by whatever changes which tree or database is live (an
    /// install, publishing a snapshot, a defragmentation): one at a time.
    switching: Mutex<()>,
    /// Where superseded snapshots and databases go to be freed gently
    /// (`None` without a member directory: they are deleted at once).
    trash: Option<Arc<trash::Trash>>,
}

impl Backend {
    /// Opens the storage in `db` and `snap_dir`, deleting what an install
    /// or build cut short left behind.
    pub fn open(db: &sled::Db, snap_dir: &Path) -> Result<Self, BackendError> {
        fs::create_dir_all(snap_dir)?;
        let live: Live = match db.get(LIVE)? {
            Some(raw) => bincode::deserialize(&raw)?,
            None => Live::default(),
        };
        let backend = Backend {
            db: RwLock::new(db.clone()),
            snap_dir: snap_dir.to_path_buf(),
            next: AtomicU64::new(0),
            live: Mutex::new(live.clone()),
            place: None,
            switching: Mutex::new(()),
            trash: None,
        };
        let mut highest = live.tree.max(live.snapshot.as_ref().map_or(0, |s| s.0));
        for name in db.tree_names() {
            let Some(generation) = tree_generation(&name) else {
                continue;
            };
            highest = highest.max(generation);
            if generation != live.tree {
                db.drop_tree(&name)?;
            }
        }
        let keep = live.snapshot.as_ref().map(|(g, _)| snapshot_name(*g));
        for entry in fs::read_dir(snap_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && keep.as_deref() != Some(name.as_str()) {
                fs::remove_file(entry.path())?;
            }
        }
        sync_dir(snap_dir)?;
        backend.next.store(highest + 1, Ordering::SeqCst);
        Ok(backend)
    }

    /// Opens the storage of the member directory `member_dir`: its live
    /// state database (see [`defrag`]) opened with `open_db`, and `snap/`.
    pub fn open_in(member_dir: &Path, open_db: OpenDb) -> Result<Self, BackendError> {
        let path = defrag::live_db_path(member_dir)?;
        let db = open_db(&path)?;
        let mut backend = Backend::open(&db, &member_dir.join("snap"))?;
        backend.place = Some((member_dir.to_path_buf(), open_db));
        backend.trash = Some(trash::Trash::start(&member_dir.join("trash"))?);
        Ok(backend)
    }

    /// The state database.
    pub fn db(&self) -> sled::Db {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn switching(&self) -> MutexGuard<'_, ()> {
        self.switching.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn generation(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// The tree the store lives in.
    pub fn state_tree(&self) -> Result<sled::Tree, BackendError> {
        Ok(self.db().open_tree(tree_name(self.live().tree))?)
    }

    /// Where a snapshot being received is written.
    pub fn receiving_path(&self) -> PathBuf {
        self.snap_dir.join("receiving.snap")
    }

    /// The current snapshot, opened, and its metadata. Opened under the
    /// lock that publishing takes, so its file cannot be deleted first.
    pub fn open_current_snapshot(&self) -> Result<Option<(fs::File, Meta)>, BackendError> {
        let live = self.live();
        let Some((generation, meta)) = live.snapshot.as_ref() else {
            return Ok(None);
        };
        let file = fs::File::open(self.snap_dir.join(snapshot_name(*generation)))?;
        Ok(Some((file, meta.clone())))
    }

    /// A path to build a new snapshot at, for [`Backend::publish_snapshot`].
    pub fn building_path(&self) -> (u64, PathBuf) {
        let generation = self.generation();
        let path = self.snap_dir.join(format!("{generation:020}.building"));
        (generation, path)
    }

    /// Makes the synced file at `built` the current snapshot, unless one at
    /// least as new is current already (an install overtook the build).
    pub fn publish_snapshot(
        &self,
        generation: u64,
        built: &Path,
        meta: Meta,
    ) -> Result<(), BackendError> {
        let _switching = self.switching();
        let mut live = self.live();
        if live
            .snapshot
            .as_ref()
            .is_some_and(|(_, m)| m.last_log_id >= meta.last_log_id)
        {
            drop(live);
            fs::remove_file(built)?;
            return Ok(());
        }
        fs::rename(built, self.snap_dir.join(snapshot_name(generation)))?;
        sync_dir(&self.snap_dir)?;
        let old = live.snapshot.replace((generation, meta)).map(|(g, _)| g);
        self.switch(&live)?;
        drop(live);
        self.forget_snapshot(old)
    }

    /// Starts installing the received snapshot file at `received`.
    pub fn begin_install(&self, received: &Path) -> Result<Install<'_>, BackendError> {
        Install::begin(self, received)
    }

    /// Makes what was applied so far durable, timed as etcd times its
    /// backend commits (only flushes that wrote something count).
    pub fn flush(&self) -> Result<(), BackendError> {
        let start = std::time::Instant::now();
        if self.db().flush()? > 0 {
            crate::metrics::get()
                .backend_commit
                .observe(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Flushes the store every `every` in the background (bounding how much
    /// log a restart replays), for as long as the backend is in use.
    pub fn spawn_flusher(backend: &Arc<Backend>, every: std::time::Duration) {
        let weak = Arc::downgrade(backend);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                match tokio::task::spawn_blocking(move || backend.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("flushing the store: {e}"),
                    Err(e) => tracing::warn!("flushing the store: {e}"),
                }
            }
        });
    }

    /// Writes `live` as the record and makes it durable: the commit point.
    fn switch(&self, live: &Live) -> Result<(), BackendError> {
        let db = self.db();
        db.insert(LIVE, bincode::serialize(live)?)?;
        db.flush()?;
        Ok(())
    }

    /// Deletes a snapshot file no longer current (readers that opened it
    /// keep reading it).
    fn forget_snapshot(&self, generation: Option<u64>) -> Result<(), BackendError> {
        if let Some(g) = generation {
            let path = self.snap_dir.join(snapshot_name(g));
            let gone = match &self.trash {
                Some(trash) => trash.discard(&path),
                None => fs::remove_file(&path),
            };
            match gone {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Deletes `dir`, a database no longer live, gently if there is a
    /// trash (see [`trash`]).
    fn forget_dir(&self, dir: &Path) -> io::Result<()> {
        match &self.trash {
            Some(trash) => trash.discard(dir),
            None => fs::remove_dir_all(dir),
        }
    }
}

/// An install under way. Each step is durable before the next starts, and
/// until [`Install::commit`] the old state stays live: a crash anywhere
/// before it leaves the old state, and reopening deletes this one's parts.
pub struct Install<'a> {
    backend: &'a Backend,
    /// No defragmentation or publishing meanwhile.
    switching: MutexGuard<'a, ()>,
    generation: u64,
    file: PathBuf,
    tree: sled::Tree,
}

impl<'a> Install<'a> {
    /// Step 1: checks the whole received file and moves it to its
    /// generation's name; creates the empty tree to load it into.
    fn begin(backend: &'a Backend, received: &Path) -> Result<Self, BackendError> {
        snapshot::verify(received)?;
        let switching = backend.switching();
        let db = backend.db();
        let generation = backend.generation();
        let file = backend.snap_dir.join(snapshot_name(generation));
        fs::rename(received, &file)?;
        sync_dir(&backend.snap_dir)?;
        let name = tree_name(generation);
        // A tree of this name could only be a leftover: start empty.
        db.drop_tree(&name)?;
        let tree = db.open_tree(&name)?;
        Ok(Install {
            backend,
            switching,
            generation,
            file,
            tree,
        })
    }

    /// Step 2: streams the snapshot's entries into the fresh tree, in
    /// chunks, all but the one under `last_key`, which is returned.
    pub fn load(&mut self, last_key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let reader = SnapshotReader::new(fs::File::open(&self.file)?)?;
        self.load_from(reader, last_key)
    }

    fn load_from(
        &mut self,
        entries: impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>,
        last_key: &[u8],
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let mut last = None;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for entry in entries {
            let (k, v) = entry?;
            if k == last_key {
                last = Some(v);
                continue;
            }
            batch.insert(k, v);
            n += 1;
            if n % CHUNK == 0 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(last)
    }

    /// Step 3: writes the applied log id last and makes the tree durable.
    pub fn seal(&mut self, last_key: &[u8], last_value: &[u8]) -> Result<(), BackendError> {
        self.tree.insert(last_key, last_value)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Step 4, the commit point: the new tree and the snapshot with `meta`
    /// become live in one durable write. Returns the new tree; the caller
    /// makes the store use it, then calls [`Installed::forget_old`].
    pub fn commit(self, meta: Meta) -> Result<(sled::Tree, Installed<'a>), BackendError> {
        let mut live = self.backend.live();
        let old = live.clone();
        live.tree = self.generation;
        live.snapshot = Some((self.generation, meta));
        if let Err(e) = self.backend.switch(&live) {
            *live = old;
            return Err(e);
        }
        let installed = Installed {
            backend: self.backend,
            _switching: self.switching,
            old,
        };
        Ok((self.tree, installed))
    }
}

/// A committed install whose predecessor's tree and file still exist.
pub struct Installed<'a> {
    backend: &'a Backend,
    _switching: MutexGuard<'a, ()>,
    old: Live,
}

impl Installed<'_> {
    /// Deletes the old tree and snapshot file. Call once nothing reads the
    /// old tree; if this never happens (a crash), the next open does it.
    pub fn forget_old(self) -> Result<(), BackendError> {
        self.backend.db().drop_tree(tree_name(self.old.tree))?;
        self.backend
            .forget_snapshot(self.old.snapshot.as_ref().map(|(g, _)| *g))
    }
}

fn tree_name(generation: u64) -> String {
    match generation {
        0 => FIRST_TREE.to_string(),
        g => format!("{FIRST_TREE}.{g:020}"),
    }
}

/// The generation of a state tree, from its name; `None` for other trees.
fn tree_generation(name: &[u8]) -> Option<u64> {
    let name = std::str::from_utf8(name).ok()?;
    if name == FIRST_TREE {
        return Some(0);
    }
    name.strip_prefix(FIRST_TREE)?
        .strip_prefix('.')?
        .parse()
        .ok()
}

fn snapshot_name(generation: u64) -> String {
    format!("{generation:020}.snap")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

pub mod defrag;
#[cfg(test)]
mod tests;
pub mod trash;
