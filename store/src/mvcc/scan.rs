//! Whole-store scans (HashKV, which any client may ask for, and the raft
//! snapshot's export) that do not hold writers off for the whole scan.
//!
//! A scan fixes its revision R, the compacted revision and the store's
//! epoch in one short view, then reads the records up to R in chunks, each
//! under a short view of its own, so a write waits for one chunk at most.
//! Records at or below R never change afterwards, except that a compaction
//! or an installed snapshot may remove them; each chunk's view notices
//! both, and the scan starts over (after a few tries it falls back to one
//! view held throughout). Records that a compaction freed but the
//! [reclaimer](super::reclaim) has not deleted yet are skipped by asking
//! the key index, so every member that applied the same log scans the same
//! records.

use super::*;

/// Records read per view.
const CHUNK: usize = 1000;
/// Chunked tries before one view is held throughout.
const ATTEMPTS: usize = 3;

/// Takes one record (tree key, value).
type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), MvccError> + 'a;

/// Why a chunked scan stopped before its end.
pub(super) enum Stop {
    /// A compaction or an installed snapshot changed what the scan reads.
    Changed,
    Failed(MvccError),
}

impl From<MvccError> for Stop {
    fn from(e: MvccError) -> Self {
        Stop::Failed(e)
    }
}

impl From<sled::Error> for Stop {
    fn from(e: sled::Error) -> Self {
        Stop::Failed(e.into())
    }
}

/// Whether the record of `kv` at `rev` is still part of the history, not
/// one a compaction freed and the reclaimer has yet to delete.
pub(super) fn is_kept(state: &State, rev: Revision, tombstone: bool, key: &[u8]) -> bool {
    rev.main > state.compacted || (!tombstone && state.index.get(key, state.compacted) == Some(rev))
}

/// What a scan fixes in its first view.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Fixed {
    pub(super) rev: i64,
    pub(super) compacted: i64,
    pub(super) epoch: u64,
}

impl Mvcc {
    /// A checksum of the store's history up to revision `rev` (0: the
    /// current one), as etcd's HashKV: every kept revision's key and value,
    /// so members that applied the same log agree. Returns the hash, the
    /// compacted revision and the revision hashed.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), MvccError> {
        self.hash_kv_pausing(rev, &mut || {})
    }

    /// [`Mvcc::hash_kv`], calling `between` between chunks (tests hold a
    /// scan there to show that writes go on meanwhile).
    pub(super) fn hash_kv_pausing(
        &self,
        rev: i64,
        between: &mut dyn FnMut(),
    ) -> Result<(u32, i64, i64), MvccError> {
        for _ in 0..ATTEMPTS {
            let fixed = self.fix(rev)?;
            let mut hasher = crc32fast::Hasher::new();
            match chunks_from(self, fixed, Revision::new(0, 0), between, &mut |k, v| {
                hasher.update(k);
                hasher.update(v);
                Ok(())
            }) {
                Ok(()) => return Ok((hasher.finalize(), fixed.compacted, fixed.rev)),
                Err(Stop::Changed) => continue,
                Err(Stop::Failed(e)) => return Err(e),
            }
        }
        // Compacted again and again meanwhile: hash in one view.
        let state = self.state.read();
        let fixed = fixed_in(&state, rev)?;
        let mut hasher = crc32fast::Hasher::new();
        scan_chunk(
            &state,
            &rev_key(Revision::new(0, 0)),
            fixed.rev,
            usize::MAX,
            &mut |k, v| {
                hasher.update(k);
                hasher.update(v);
                Ok(())
            },
        )?;
        Ok((hasher.finalize(), fixed.compacted, fixed.rev))
    }

    /// Hands every stored entry of one consistent moment to `sink`, in key
    /// order: metadata (its own revision and compaction, the caller's
    /// records) then the kept history, in chunks. Fails with
    /// [`MvccError::Changed`] when a compaction or an installed snapshot
    /// changed the store midway: the caller starts over with a new sink.
    pub fn export_to(&self, sink: &mut EntrySink<'_>) -> Result<(), MvccError> {
        self.export_pausing(sink, &mut || {})
    }

    pub(super) fn export_pausing(
        &self,
        sink: &mut EntrySink<'_>,
        between: &mut dyn FnMut(),
    ) -> Result<(), MvccError> {
        self.reclaimer.wait_idle();
        let (fixed, meta) = {
            let state = self.state.read();
            let fixed = fixed_in(&state, 0)?;
            let meta = state
                .tree
                .scan_prefix([META_PREFIX])
                .collect::<Result<Vec<_>, _>>()?;
            (fixed, meta)
        };
        for (k, v) in &meta {
            sink(k, v).map_err(io)?;
        }
        match chunks_from(self, fixed, Revision::new(0, 0), between, &mut |k, v| {
            sink(k, v).map_err(io)
        }) {
            Ok(()) => Ok(()),
            Err(Stop::Changed) => Err(MvccError::Changed),
            Err(Stop::Failed(e)) => Err(e),
        }
    }

    /// [`Mvcc::export_to`] in one view held throughout: writers wait for
    /// the whole export. For when chunked exports keep being interrupted.
    pub fn export_in_one_view(&self, sink: &mut EntrySink<'_>) -> Result<(), MvccError> {
        self.reclaimer.wait_idle();
        let state = self.state.read();
        for item in state.tree.scan_prefix([META_PREFIX]) {
            let (k, v) = item?;
            sink(&k, &v).map_err(io)?;
        }
        scan_chunk(
            &state,
            &rev_key(Revision::new(0, 0)),
            state.current,
            usize::MAX,
            &mut |k, v| sink(k, v).map_err(io),
        )?;
        Ok(())
    }

    /// The revision, compaction and epoch a scan of revision `rev` (0: the
    /// current one) works with, once no freed records wait for deletion.
    fn fix(&self, rev: i64) -> Result<Fixed, MvccError> {
        self.reclaimer.wait_idle();
        let state = self.state.read();
        fixed_in(&state, rev)
    }
}

/// Feeds the kept records from revision `from` through `fixed.rev` to
/// `f`, one short view per chunk (`f` runs after the view is released),
/// calling `between` before each chunk.
pub(super) fn chunks_from(
    mvcc: &Mvcc,
    fixed: Fixed,
    from: Revision,
    between: &mut dyn FnMut(),
    f: &mut Visit<'_>,
) -> Result<(), Stop> {
    let mut from = rev_key(from).to_vec();
    let mut records: Vec<(sled::IVec, sled::IVec)> = Vec::with_capacity(CHUNK);
    loop {
        between();
        let next = {
            let state = mvcc.state.read();
            if state.epoch != fixed.epoch || state.compacted != fixed.compacted {
                return Err(Stop::Changed);
            }
            scan_chunk(&state, &from, fixed.rev, CHUNK, &mut |k, v| {
                records.push((k.into(), v.into()));
                Ok(())
            })?
        };
        // The visitor runs with the view released: what it does with a
        // record (write it to a file, say, which can wait on the disk for
        // a long time) never holds up a write.
        for (k, v) in records.drain(..) {
            f(&k, &v)?;
        }
        match next {
            Some(last) => {
                // The smallest key after `last`.
                from = last;
                from.push(0);
            }
            None => return Ok(()),
        }
    }
}

fn io(e: std::io::Error) -> MvccError {
    MvccError::Storage(e.to_string())
}

pub(super) fn fixed_in(state: &State, rev: i64) -> Result<Fixed, MvccError> {
    let rev = if rev <= 0 { state.current } else { rev };
    if rev > state.current {
        return Err(MvccError::FutureRevision);
    }
    if rev < state.compacted {
        return Err(MvccError::Compacted);
    }
    Ok(Fixed {
        rev,
        compacted: state.compacted,
        epoch: state.epoch,
    })
}

/// Feeds up to `max` kept records from tree key `from` through revision
/// `upto` to `f`; returns the last tree key read when `max` were read
/// (there may be more), `None` at the end.
pub(super) fn scan_chunk(
    state: &State,
    from: &[u8],
    upto: i64,
    max: usize,
    f: &mut Visit<'_>,
) -> Result<Option<Vec<u8>>, MvccError> {
    let end = rev_key(Revision::new(upto, i64::MAX));
    let mut read = 0;
    let mut last = None;
    for item in state.tree.range(from.to_vec()..=end.to_vec()) {
        let (k, v) = item?;
        let rev = Revision::from_bytes(&k[1..]).ok_or_else(|| corrupt("revision key"))?;
        let keep = rev.main > state.compacted || {
            let (kind, kv) = decode_value(&v)?;
            is_kept(state, rev, kind == KIND_TOMBSTONE, &kv.key)
        };
        if keep {
            f(&k, &v)?;
        }
        read += 1;
        if read == max {
            last = Some(k.to_vec());
            break;
        }
    }
    Ok(last)
}
