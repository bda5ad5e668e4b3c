//! Moving the store into a tree of another database while it serves
//! (defragmentation): the kept records are copied in chunks under short
//! views, then what was written meanwhile in a few more rounds; only the
//! last few records, the metadata and the caller's switch run with writers
//! held off. Freed records (see [`super::reclaim`]) are left behind.

use std::time::{Duration, Instant};

use super::scan::{chunks_from, Fixed};
use super::*;

/// Rounds of copying what was written during the previous round, before
/// writers are held off for the rest.
const CATCH_UP_ROUNDS: usize = 3;

impl Mvcc {
    /// Copies the store into `target`, an empty tree, then, with writers
    /// held off, copies the last changes, calls `switch` (which makes the
    /// target's database durable and live) and makes `target` the store's
    /// tree. Fails with [`MvccError::Changed`] when a compaction or an
    /// installed snapshot changed the store meanwhile; the store is then
    /// as it was. Returns how long writers were held off.
    pub fn move_to<E: From<MvccError>>(
        &self,
        target: &sled::Tree,
        switch: impl FnOnce() -> Result<(), E>,
    ) -> Result<Duration, E> {
        self.reclaimer.wait_idle();
        let fixed = {
            let state = self.state.read();
            scan::fixed_in(&state, 0)?
        };
        let mut from = Revision::new(0, 0);
        let mut upto = fixed;
        for round in 0..CATCH_UP_ROUNDS {
            let t = Instant::now();
            copy_round(self, upto, from, target)?;
            target.flush().map_err(MvccError::from)?;
            tracing::debug!(
                round,
                from = from.main,
                upto = upto.rev,
                ms = t.elapsed().as_millis() as u64,
                "defragmentation: copied a round"
            );
            from = Revision::new(upto.rev + 1, 0);
            let now = self.current_revision();
            if now < from.main {
                break;
            }
            upto = Fixed { rev: now, ..fixed };
        }
        let mut state = self.state.write();
        let held = Instant::now();
        if state.epoch != fixed.epoch || state.compacted != fixed.compacted {
            return Err(MvccError::Changed.into());
        }
        let mut batch = sled::Batch::default();
        scan::scan_chunk(
            &state,
            &rev_key(from),
            state.current,
            usize::MAX,
            &mut |k, v| {
                batch.insert(k, v);
                Ok(())
            },
        )?;
        // The metadata as it is now, and nothing that was removed.
        for item in target.scan_prefix([META_PREFIX]) {
            let (k, _) = item.map_err(MvccError::from)?;
            batch.remove(k);
        }
        for item in state.tree.scan_prefix([META_PREFIX]) {
            let (k, v) = item.map_err(MvccError::from)?;
            batch.insert(k, v);
        }
        target.apply_batch(batch).map_err(MvccError::from)?;
        target.flush().map_err(MvccError::from)?;
        switch()?;
        let old = std::mem::replace(&mut state.tree, target.clone());
        let held = held.elapsed();
        drop(state);
        // The old database's last handle, most likely: dropping it shuts
        // the database down (its page cache freed, its files closed),
        // which took 100-120 ms at 1 GiB, with writers no longer waiting.
        drop(old);
        Ok(held)
    }
}

/// Copies the kept records from `from` through `upto.rev` into `target`,
/// one short view per chunk.
fn copy_round(
    mvcc: &Mvcc,
    upto: Fixed,
    from: Revision,
    target: &sled::Tree,
) -> Result<(), MvccError> {
    let batch = std::cell::RefCell::new(sled::Batch::default());
    let apply = || target.apply_batch(std::mem::take(&mut *batch.borrow_mut()));
    let mut failed = None;
    let result = chunks_from(
        mvcc,
        upto,
        from,
        &mut || {
            if let Err(e) = apply() {
                failed.get_or_insert(e);
            }
        },
        &mut |k, v| {
            batch.borrow_mut().insert(k, v);
            Ok(())
        },
    );
    if let Some(e) = failed {
        return Err(e.into());
    }
    match result {
        Ok(()) => Ok(apply()?),
        Err(scan::Stop::Changed) => Err(MvccError::Changed),
        Err(scan::Stop::Failed(e)) => Err(e),
    }
}
