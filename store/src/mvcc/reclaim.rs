//! Finishes compactions off the apply path: prunes the key index and
//! deletes the records a compaction freed, in bounded steps on a thread of
//! its own, so that applying a compaction costs one small write however
//! much history it frees. Until a job is done the freed records stay on
//! disk, unreachable: reads below the compacted revision are refused, and
//! the revision visible at or after it is the same whether or not a key's
//! older revisions are still in the index. A crash before the job ends
//! loses nothing: opening the store compacts again at the recorded
//! revision. Whole-store scans that read raw records (HashKV, exports)
//! first wait for the jobs under way ([`Reclaimer::wait_idle`]). Each key's
//! records are deleted oldest first, so a crash midway leaves history that
//! reads consistently (see `delete`).

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::committer::StateLock;
use super::{rev_key, Revision};

/// Records deleted per sled batch. A batch holds every other writer of
/// the database off while it is applied (sled's batches are atomic), so
/// batches are small and the deleting thread steps aside between them
/// (with 1000 per batch, 8 writers made half the puts they make with 250
/// while a compaction of 100k keys ran).
const BATCH: usize = 250;
/// The shortest pause between two batches: writes get the database in
/// between. A longer batch is followed by a pause as long as it took (see
/// [`pause_after`]).
const PAUSE: Duration = Duration::from_millis(2);
/// Keys of the index pruned per hold of the store's write lock (a few
/// milliseconds at most).
pub(super) const KEYS: usize = 10_000;

/// A job: a compaction at `at` to finish. It prunes the index of the
/// store (as long as it is still at `epoch`, the tree it was compacted in)
/// and deletes what that frees.
struct Job {
    state: Weak<StateLock>,
    epoch: u64,
    at: i64,
}

/// Jobs not yet done, and (in tests) whether deleting is held off.
#[derive(Default)]
struct Pending {
    jobs: usize,
    held: bool,
}

/// The deleting thread and the count of jobs not yet done.
pub(super) struct Reclaimer {
    jobs: Mutex<Option<Sender<Job>>>,
    pending: Arc<(Mutex<Pending>, Condvar)>,
}

impl Reclaimer {
    /// Starts the thread; it ends when the reclaimer is dropped.
    pub(super) fn start() -> Self {
        let (tx, rx) = channel::<Job>();
        let pending: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let done = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("mvcc-reclaim".into())
            .spawn(move || {
                for job in rx {
                    let (state, changed) = &*done;
                    {
                        let mut p = state.lock().unwrap_or_else(|e| e.into_inner());
                        while p.held {
                            p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    run(job);
                    state.lock().unwrap_or_else(|e| e.into_inner()).jobs -= 1;
                    changed.notify_all();
                }
            });
        let jobs = match spawned {
            Ok(_) => Some(tx),
            // Without a thread, jobs run on the caller's.
            Err(e) => {
                tracing::warn!("no thread for compaction deletes ({e}); deleting inline");
                None
            }
        };
        Reclaimer {
            jobs: Mutex::new(jobs),
            pending,
        }
    }

    /// Deletes `freed` from `tree`, later. Call once the batch that
    /// recorded the compaction is written.
    /// Finishes the compaction at `at` of the store in `state`, later: its
    /// index is pruned and the records that frees deleted. Call once the
    /// batch that recorded the compaction is written.
    pub(super) fn compact(&self, state: &Arc<StateLock>, epoch: u64, at: i64) {
        self.queue(Job {
            state: Arc::downgrade(state),
            epoch,
            at,
        });
    }

    fn queue(&self, job: Job) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = &*self.pending;
        state.lock().unwrap_or_else(|e| e.into_inner()).jobs += 1;
        let inline = match jobs.as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        drop(jobs);
        if let Some(job) = inline {
            run(job);
            let (state, changed) = &*self.pending;
            state.lock().unwrap_or_else(|e| e.into_inner()).jobs -= 1;
            changed.notify_all();
        }
    }

    /// Waits until every job submitted so far is done.
    pub(super) fn wait_idle(&self) {
        let (state, changed) = &*self.pending;
        let mut p = state.lock().unwrap_or_else(|e| e.into_inner());
        while p.jobs > 0 {
            p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether no job is under way or waiting.
    pub(super) fn idle(&self) -> bool {
        let (state, _) = &*self.pending;
        state.lock().unwrap_or_else(|e| e.into_inner()).jobs == 0
    }

    /// Holds deleting off (`true`) or lets it go on: for tests that look
    /// at the store while freed records are still on disk.
    #[cfg(test)]
    pub(super) fn hold(&self, held: bool) {
        self.hold_off(held);
    }

    fn hold_off(&self, held: bool) {
        let (state, changed) = &*self.pending;
        state.lock().unwrap_or_else(|e| e.into_inner()).held = held;
        changed.notify_all();
    }
}

impl Drop for Reclaimer {
    /// Finishes the jobs under way: a store opened again on the same tree
    /// must not read it while records are being deleted.
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.hold_off(false);
        self.wait_idle();
    }
}

fn run(job: Job) {
    if let Err(e) = compact(&job.state, job.epoch, job.at) {
        // Left for the compaction that opening the store runs again.
        tracing::warn!("finishing the compaction at {}: {e}", job.at);
    }
}

/// Prunes the index a part at a time, each under a short hold of the
/// store's write lock, and deletes what each part freed. Stops early when
/// the store is gone or has a new tree (an installed snapshot's state
/// comes compacted).
fn compact(state: &Weak<StateLock>, epoch: u64, at: i64) -> Result<(), sled::Error> {
    let mut from = Vec::new();
    loop {
        let pruning = Instant::now();
        let Some(state) = state.upgrade() else {
            return Ok(());
        };
        let (mut freed, next, tree) = {
            let mut s = state.write();
            if s.epoch != epoch {
                return Ok(());
            }
            let (freed, next) = s.index.compact_some(at, &from, KEYS);
            (freed, next, s.tree.clone())
        };
        let pruned_in = pruning.elapsed();
        drop(state);
        delete(&tree, &mut freed)?;
        match next {
            Some(key) => from = key,
            None => return Ok(()),
        }
        pause_after(pruned_in);
    }
}

/// Steps aside after a step of work that took `took`, for as long (at
/// least [`PAUSE`]): the thread then uses at most half a core, and writers
/// on a busy machine keep the rest. On 2 cores, with 2 ms pauses, 8
/// writers made a quarter of etcd's puts while a compaction of 100k keys
/// ran (bench/RESULTS.md, "Compaction paced by its own work").
fn pause_after(took: Duration) {
    std::thread::sleep(took.max(PAUSE));
}

/// Deletes `freed` from `tree`. Oldest first: a crash midway then leaves,
/// for every key, the newer part of its freed records, which reads as
/// history the compaction that opening the store runs again frees;
/// deleting a delete before the puts it ended would make them look live.
fn delete(tree: &sled::Tree, freed: &mut [Revision]) -> Result<(), sled::Error> {
    freed.sort_unstable();
    let mut previous = None;
    for chunk in freed.chunks(BATCH) {
        if let Some(took) = previous {
            pause_after(took);
        }
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        for rev in chunk {
            batch.remove(&rev_key(*rev)[..]);
        }
        tree.apply_batch(batch)?;
        previous = Some(started.elapsed());
    }
    Ok(())
}
