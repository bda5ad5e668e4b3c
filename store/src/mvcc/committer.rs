//! Writes each applied batch into sled on a thread of its own, so that a
//! write is answered once it is applied in memory rather than after sled
//! has taken the batch. sled's `apply_batch` seals its IO buffer and wakes
//! its writer threads: 66-92 µs of each apply on this machine, on the
//! critical path of every write. Nothing is lost by answering first: the
//! entry is already durable in the raft log, which a restart replays past
//! the last applied index the tree recorded.
//!
//! Until the thread has written every batch handed to it, the store's lock
//! ([`StateLock`]) lets no reader or writer in, so every view still sees
//! the tree holding all that the key index names, as when the apply wrote
//! it itself.
//!
//! A batch sled refuses is kept as the first failure: the next commit
//! fails with it (raft then stops the member, whose restart replays the
//! log), and readers stop waiting for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{MvccError, State};

/// Batches of at most this many revisions are handed to the thread;
/// larger ones, applied when many writers are waiting, are written by the
/// applying thread itself.
pub(super) const HANDOFF_REVISIONS: i64 = 16;

/// The store's state behind its lock, with the batches still being written.
pub(super) struct StateLock {
    lock: RwLock<State>,
    committer: Committer,
}

impl StateLock {
    pub(super) fn new(state: State) -> Self {
        StateLock {
            lock: RwLock::new(state),
            committer: Committer::start(),
        }
    }

    /// A read lock, once the batches of every apply it sees are in the tree.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        loop {
            let state = self.lock.read().unwrap_or_else(|e| e.into_inner());
            let queued = state.queued;
            if self.committer.written(queued) {
                return state;
            }
            drop(state);
            self.committer.wait(queued);
        }
    }

    /// The write lock, once every batch handed over is in the tree.
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        loop {
            let state = self.lock.write().unwrap_or_else(|e| e.into_inner());
            let queued = state.queued;
            if self.committer.written(queued) {
                return state;
            }
            drop(state);
            self.committer.wait(queued);
        }
    }

    /// Hands `batch` for `state`'s tree to the writing thread (readers and
    /// writers wait for it from now on), or, unless `handoff`, writes it
    /// here. `state` is write-locked, so every earlier batch is written.
    /// Fails with the first batch sled refused, if any.
    pub(super) fn submit(
        &self,
        state: &mut State,
        batch: sled::Batch,
        handoff: bool,
    ) -> Result<(), MvccError> {
        if let Some(e) = self.committer.failure() {
            return Err(e);
        }
        state.queued += 1;
        let job = Job {
            seq: state.queued,
            tree: state.tree.clone(),
            batch,
        };
        if handoff {
            self.committer.submit(job);
            Ok(())
        } else {
            self.committer.submitted.store(job.seq, Ordering::Release);
            write(&self.committer.written, &self.committer.progress, job);
            self.committer.failure().map_or(Ok(()), Err)
        }
    }

    /// Holds writing off (`true`) or lets it go on: for tests that look
    /// at the store while a batch is not yet in the tree.
    #[cfg(test)]
    pub(super) fn hold(&self, held: bool) {
        let (progress, changed) = &*self.committer.progress;
        progress.lock().unwrap_or_else(|e| e.into_inner()).held = held;
        changed.notify_all();
    }

    /// The state without waiting for batches (tests only).
    #[cfg(test)]
    pub(super) fn peek(&self) -> RwLockReadGuard<'_, State> {
        self.lock.read().unwrap_or_else(|e| e.into_inner())
    }
}

struct Job {
    /// Batches are numbered from 1 in the order they are handed over.
    seq: u64,
    tree: sled::Tree,
    batch: sled::Batch,
}

#[derive(Default)]
struct Progress {
    /// The last batch written (or refused).
    written: u64,
    failed: Option<MvccError>,
    held: bool,
}

struct Committer {
    jobs: Mutex<Option<Sender<Job>>>,
    /// The last batch handed over.
    submitted: AtomicU64,
    /// `Progress::written`, readable without the lock.
    written: Arc<AtomicU64>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
}

impl Committer {
    fn start() -> Self {
        let (tx, rx) = channel::<Job>();
        let written = Arc::new(AtomicU64::new(0));
        let progress: Arc<(Mutex<Progress>, Condvar)> = Arc::default();
        let (w, p) = (written.clone(), progress.clone());
        let spawned = std::thread::Builder::new()
            .name("mvcc-commit".into())
            .spawn(move || {
                for job in rx {
                    wait_unheld(&p);
                    write(&w, &p, job);
                }
            });
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
            written,
            progress,
        }
    }

    fn submit(&self, job: Job) {
        self.submitted.store(job.seq, Ordering::Release);
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let inline = match jobs.as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        drop(jobs);
        if let Some(job) = inline {
            write(&self.written, &self.progress, job);
        }
    }

    fn written(&self, seq: u64) -> bool {
        self.written.load(Ordering::Acquire) >= seq
    }

    fn wait(&self, seq: u64) {
        let (progress, changed) = &*self.progress;
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        while p.written < seq {
            p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn failure(&self) -> Option<MvccError> {
        let (progress, _) = &*self.progress;
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
        let (progress, changed) = &*self.progress;
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        p.held = false;
        changed.notify_all();
        drop(p);
        // The channel is closed: the thread writes what is queued, then ends.
        self.wait(self.submitted.load(Ordering::Acquire));
    }
}

fn wait_unheld(progress: &(Mutex<Progress>, Condvar)) {
    let (p, changed) = progress;
    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
    while p.held {
        p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
    }
}

fn write(written: &AtomicU64, progress: &(Mutex<Progress>, Condvar), job: Job) {
    let result = job.tree.apply_batch(job.batch);
    let (p, changed) = progress;
    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = result {
        tracing::error!("writing an applied batch to the store: {e}; the member stops at its next write, and its restart replays the raft log");
        p.failed.get_or_insert(e.into());
    }
    p.written = job.seq;
    written.store(job.seq, Ordering::Release);
    drop(p);
    changed.notify_all();
}
