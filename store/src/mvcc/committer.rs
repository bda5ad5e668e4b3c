//! Writes applied batches into sled on a thread of its own, many applies
//! in one sled batch, so that a write is answered once it is applied in
//! memory and sled's cost is paid once per commit rather than per apply.
//! sled's `apply_batch` seals its IO buffer and wakes its writer threads
//! (66-92 µs on this machine, two buffer writes and two
//! `sync_file_range` on its pool, on every member, for each apply when
//! each apply was its own batch); etcd's backend likewise commits bbolt
//! every 100 ms. Nothing is lost by answering first: the entry is already
//! durable in the raft log, which a restart replays past the last applied
//! index the tree recorded.
//!
//! Until a batch is in the tree its writes are [staged](super::staged):
//! views of the store read them there, so applies and reads never wait for
//! the thread. What reads the tree alone (exports, scans, checkpoints, a
//! new tree, a flush) takes the store's lock through
//! [`StateLock::read`]/[`StateLock::write`], which have the thread commit
//! at once and wait until every batch handed over is in the tree. An apply
//! waits too when more than [`MAX_STAGED`] keys are staged.
//!
//! A batch sled refuses is kept as the first failure: the next commit
//! fails with it (raft then stops the member, whose restart replays the
//! log), and readers stop waiting for it.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::staged::{Op, Staged};
use super::{MvccError, State};

/// How long the thread gathers applied batches before it commits them.
pub(super) const COMMIT_EVERY: Duration = Duration::from_millis(10);
/// Gathered writes past this many are committed at once.
const GROUP_OPS: usize = 20_000;
/// Applies wait for the thread while more keys than this are staged.
pub(super) const MAX_STAGED: usize = 200_000;

/// The store's state behind its lock, with the batches still being written.
pub(super) struct StateLock {
    lock: RwLock<State>,
    committer: Committer,
}

impl StateLock {
    pub(super) fn new(state: State) -> Self {
        let committer = Committer::start();
        committer.shared.staged.set_epoch(state.epoch);
        StateLock {
            lock: RwLock::new(state),
            committer,
        }
    }

    /// The writes applied but not yet in the tree.
    pub(super) fn staged(&self) -> &Staged {
        &self.committer.shared.staged
    }

    /// A read lock, once the batches of every apply it sees are in the
    /// tree: for reading the tree alone.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.when_ready(
            || self.read_fresh(),
            |queued| self.committer.written(queued),
        )
    }

    /// The write lock, once every batch handed over is in the tree.
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.when_ready(|| self.write_now(), |queued| self.committer.written(queued))
    }

    /// A read lock at once: reads through it look at the staged writes
    /// before the tree.
    pub(super) fn read_fresh(&self) -> RwLockReadGuard<'_, State> {
        self.lock.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The write lock for an apply: at once, unless too much is staged.
    pub(super) fn write_fresh(&self) -> RwLockWriteGuard<'_, State> {
        self.when_ready(
            || self.write_now(),
            |queued| self.staged().len() <= MAX_STAGED || self.committer.written(queued),
        )
    }

    fn write_now(&self) -> RwLockWriteGuard<'_, State> {
        self.lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a guard with `take` until `ready` holds for the batches it
    /// has handed over, letting go of it to wait for the writing thread
    /// in between.
    fn when_ready<G: Deref<Target = State>>(
        &self,
        take: impl Fn() -> G,
        ready: impl Fn(u64) -> bool,
    ) -> G {
        loop {
            let state = take();
            let queued = state.queued;
            if ready(queued) {
                return state;
            }
            drop(state);
            self.committer.wait(queued);
        }
    }

    /// Stages `ops` for `state`'s tree and hands them to the writing
    /// thread. `state` is write-locked. Fails with the first batch sled
    /// refused, if any.
    pub(super) fn submit(&self, state: &mut State, ops: Vec<Op>) -> Result<(), MvccError> {
        if let Some(e) = self.committer.failure() {
            return Err(e);
        }
        state.queued += 1;
        self.staged().stage(state.queued, &ops);
        self.committer.submit(Job {
            seq: state.queued,
            epoch: state.epoch,
            tree: state.tree.clone(),
            ops,
        });
        Ok(())
    }

    /// Moves the staged writes to the store's next tree; `state` is
    /// write-locked through [`StateLock::write`], so nothing is staged.
    pub(super) fn new_epoch(&self, state: &State) {
        self.staged().set_epoch(state.epoch);
    }

    /// Holds writing off (`true`) or lets it go on: for tests that look
    /// at the store while a batch is not yet in the tree.
    #[cfg(test)]
    pub(super) fn hold(&self, held: bool) {
        let (progress, changed) = &self.committer.shared.progress;
        progress.lock().unwrap_or_else(|e| e.into_inner()).held = held;
        changed.notify_all();
    }
}

struct Job {
    /// Batches are numbered from 1 in the order they are handed over.
    seq: u64,
    /// The tree's epoch: batches of different trees are never merged.
    epoch: u64,
    tree: sled::Tree,
    ops: Vec<Op>,
}

enum Msg {
    Job(Job),
    /// Someone waits: commit what is gathered now.
    Kick,
}

#[derive(Default)]
struct Progress {
    /// The last batch written (or refused).
    written: u64,
    failed: Option<MvccError>,
    held: bool,
}

#[derive(Default)]
struct Shared {
    /// `Progress::written`, readable without the lock.
    written: AtomicU64,
    progress: (Mutex<Progress>, Condvar),
    staged: Staged,
}

struct Committer {
    jobs: Mutex<Option<Sender<Msg>>>,
    /// The last batch handed over.
    submitted: AtomicU64,
    shared: Arc<Shared>,
}

impl Committer {
    fn start() -> Self {
        let (tx, rx) = channel::<Msg>();
        let shared: Arc<Shared> = Arc::default();
        let on_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("mvcc-commit".into())
            .spawn(move || gather(&rx, &on_thread));
        let jobs = match spawned {
            Ok(_) => Some(tx),
            // Without a thread, batches are written on the caller's.
            Err(e) => {
                tracing::warn!("no thread for writing applied batches ({e}); writing inline");
                None
            }
        };
        Committer {
            jobs: Mutex::new(jobs),
            submitted: AtomicU64::new(0),
            shared,
        }
    }

    fn submit(&self, job: Job) {
        self.submitted.store(job.seq, Ordering::Release);
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let inline = match jobs.as_ref() {
            Some(tx) => tx.send(Msg::Job(job)).err().and_then(|e| match e.0 {
                Msg::Job(job) => Some(job),
                Msg::Kick => None,
            }),
            None => Some(job),
        };
        drop(jobs);
        if let Some(job) = inline {
            commit(&self.shared, vec![job]);
        }
    }

    fn written(&self, seq: u64) -> bool {
        self.shared.written.load(Ordering::Acquire) >= seq
    }

    /// Waits until batch `seq` is written, having the thread commit now.
    fn wait(&self, seq: u64) {
        if self.written(seq) {
            return;
        }
        if let Some(tx) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(Msg::Kick);
        }
        let (progress, changed) = &self.shared.progress;
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        while p.written < seq {
            p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn failure(&self) -> Option<MvccError> {
        let (progress, _) = &self.shared.progress;
        progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .clone()
    }
}

impl Drop for Committer {
    /// Writes what was handed over before the store goes.
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (progress, changed) = &self.shared.progress;
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        p.held = false;
        changed.notify_all();
        drop(p);
        // The channel is closed: the thread writes what is queued, then ends.
        self.wait(self.submitted.load(Ordering::Acquire));
    }
}

/// The thread: gathers batches for [`COMMIT_EVERY`] from the first one
/// (or [`GROUP_OPS`] writes, or until someone waits) and commits them as
/// one; commits what is left when the store goes.
fn gather(rx: &std::sync::mpsc::Receiver<Msg>, shared: &Shared) {
    let mut group: Vec<Job> = Vec::new();
    let mut ops = 0;
    let mut deadline = Instant::now();
    loop {
        let msg = if group.is_empty() {
            match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    commit(shared, group);
                    return;
                }
            }
        };
        match msg {
            Some(Msg::Job(job)) => {
                if group.first().is_some_and(|first| first.epoch != job.epoch) {
                    commit(shared, std::mem::take(&mut group));
                }
                if group.is_empty() {
                    deadline = Instant::now() + COMMIT_EVERY;
                    ops = 0;
                }
                ops += job.ops.len();
                group.push(job);
                if ops < GROUP_OPS {
                    continue;
                }
            }
            Some(Msg::Kick) if group.is_empty() => continue,
            Some(Msg::Kick) | None => {}
        }
        commit(shared, std::mem::take(&mut group));
    }
}

fn wait_unheld(progress: &(Mutex<Progress>, Condvar)) {
    let (p, changed) = progress;
    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
    while p.held {
        p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
    }
}

/// Writes `group` (batches of one tree, in order) as one sled batch.
fn commit(shared: &Shared, group: Vec<Job>) {
    let Some((seq, tree)) = group.last().map(|j| (j.seq, j.tree.clone())) else {
        return;
    };
    wait_unheld(&shared.progress);
    let mut batch = sled::Batch::default();
    for (k, v) in group.into_iter().flat_map(|job| job.ops) {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    let result = tree.apply_batch(batch);
    if result.is_ok() {
        shared.staged.written(seq);
    }
    let (p, changed) = &shared.progress;
    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = result {
        // Its writes stay staged, so reads still agree with the key index
        // until the member stops.
        tracing::error!("writing applied batches to the store: {e}; the member stops at its next write, and its restart replays the raft log");
        p.failed.get_or_insert(e.into());
    }
    p.written = seq;
    shared.written.store(seq, Ordering::Release);
    drop(p);
    changed.notify_all();
}
