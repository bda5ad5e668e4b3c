//! Client reads (Range, read-only Txn) that do not hold writers off while
//! they load values.
//!
//! A [`PinnedView`] fixes the store's revision R and epoch in one short
//! lock. Each range then takes the lock only to ask the in-memory key index
//! which records are visible, and loads those records from the tree without
//! it: records at or below R never change afterwards, so the answer is the
//! store as it was at R however many writes apply meanwhile. Two things may
//! take records away: a compaction past the revision read (its freed
//! records are deleted by the [reclaimer](super::reclaim)) and an installed
//! snapshot (a new tree). Either makes the range fail with
//! [`MvccError::Changed`] when the revision read was the view's own, and
//! [`Mvcc::read_pinned`] starts over in a new view, which is the store at a
//! later moment of the same request; a range at a revision the client chose
//! that a compaction passed fails with `Compacted`, as it would a moment
//! later. After a few tries a view holds the lock throughout, as every read
//! did before.

use super::*;

/// Tries in views that hold no lock before one view holds it throughout.
const ATTEMPTS: usize = 3;

/// A read-only view at a fixed revision that takes the store's lock only
/// briefly (or, as the last resort of [`Mvcc::read_pinned`], throughout).
pub struct PinnedView<'a> {
    mvcc: &'a Mvcc,
    tree: sled::Tree,
    rev: i64,
    compacted: i64,
    epoch: u64,
    held: Option<RwLockReadGuard<'a, State>>,
}

impl Mvcc {
    /// A view at the current revision that holds no lock between calls.
    pub fn pinned(&self) -> PinnedView<'_> {
        let state = self.state.read_fresh();
        PinnedView {
            mvcc: self,
            tree: state.tree.clone(),
            rev: state.current,
            compacted: state.compacted,
            epoch: state.epoch,
            held: None,
        }
    }

    /// Runs `read` in a [`PinnedView`], starting over in a new one while it
    /// fails because the store changed under it (`changed` tells which
    /// errors say so); the last try holds the lock throughout and cannot
    /// fail that way.
    pub fn read_pinned<T, E>(
        &self,
        mut read: impl FnMut(&mut PinnedView<'_>) -> Result<T, E>,
        changed: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        for _ in 1..ATTEMPTS {
            match read(&mut self.pinned()) {
                Err(e) if changed(&e) => continue,
                done => return done,
            }
        }
        let state = self.state.read_fresh();
        let mut view = PinnedView {
            mvcc: self,
            tree: state.tree.clone(),
            rev: state.current,
            compacted: state.compacted,
            epoch: state.epoch,
            held: Some(state),
        };
        read(&mut view)
    }
}

impl PinnedView<'_> {
    /// The compacted revision when the view was taken.
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// [`ReadView::range`], calling `between` after the key index was read
    /// and before the values are loaded (tests change the store there).
    pub(super) fn range_pausing(
        &self,
        range: KeyRange<'_>,
        opts: RangeOptions,
        between: &mut dyn FnMut(),
    ) -> Result<RangeResult, MvccError> {
        if let Some(state) = &self.held {
            return range_at(state, self.rev, range, opts, |rev| {
                load(self.mvcc.state.staged(), state, &HashMap::new(), rev)
            });
        }
        if opts.rev > self.rev {
            return Err(MvccError::FutureRevision);
        }
        let (revs, count) = {
            let state = self.lock();
            self.check(&state, opts)?;
            let rev = self.read_rev(opts);
            let limit = if opts.count_only { 1 } else { opts.limit };
            state.index.range(range, rev, limit)
        };
        if opts.count_only {
            return Ok(RangeResult {
                kvs: Vec::new(),
                count,
                rev: self.rev,
            });
        }
        between();
        let mut kvs = Vec::with_capacity(revs.len());
        for (_, rev) in revs {
            let staged = self.mvcc.state.staged();
            match staged.get(self.epoch, &self.tree, &rev_key(rev)) {
                Ok(Some(raw)) => kvs.push(decode_value(&raw)?.1),
                // Gone or unreadable: a compaction or a new tree, or damage.
                Ok(None) => {
                    self.check(&self.lock(), opts)?;
                    return Err(corrupt("index names a revision missing on disk"));
                }
                Err(e) => {
                    self.check(&self.lock(), opts)?;
                    return Err(e.into());
                }
            }
        }
        Ok(RangeResult {
            kvs,
            count,
            rev: self.rev,
        })
    }

    fn lock(&self) -> RwLockReadGuard<'_, State> {
        self.mvcc.state.read_fresh()
    }

    fn read_rev(&self, opts: RangeOptions) -> i64 {
        if opts.rev <= 0 {
            self.rev
        } else {
            opts.rev
        }
    }

    /// Whether the store still holds everything visible at the revision
    /// read: the same tree, and no compaction past that revision.
    fn check(&self, state: &State, opts: RangeOptions) -> Result<(), MvccError> {
        if state.epoch != self.epoch {
            return Err(MvccError::Changed);
        }
        if self.read_rev(opts) < state.compacted {
            return Err(if opts.rev <= 0 {
                MvccError::Changed
            } else {
                MvccError::Compacted
            });
        }
        Ok(())
    }
}

impl ReadView for PinnedView<'_> {
    fn rev(&self) -> i64 {
        self.rev
    }

    fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult, MvccError> {
        self.range_pausing(range, opts, &mut || {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Mvcc {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Mvcc::open(db.open_tree("kv").unwrap()).unwrap()
    }

    fn put(mvcc: &Mvcc, key: &str, value: &str) {
        let mut w = mvcc.write();
        w.begin();
        w.put(key.as_bytes(), value.as_bytes().to_vec(), 0);
        w.end();
        w.commit().unwrap();
    }

    fn compact(mvcc: &Mvcc, at: i64) {
        let mut w = mvcc.write();
        w.compact(at).unwrap();
        w.commit().unwrap();
        mvcc.wait_reclaimed();
    }

    fn all() -> KeyRange<'static> {
        KeyRange::new(b"\0", b"\0")
    }

    fn values(r: &RangeResult) -> Vec<(String, String)> {
        r.kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into(),
                    String::from_utf8_lossy(&kv.value).into(),
                )
            })
            .collect()
    }

    #[test]
    fn writes_commit_while_a_view_is_open_and_the_view_keeps_its_revision() {
        let mvcc = store();
        put(&mvcc, "a", "1");
        put(&mvcc, "b", "1");
        let view = mvcc.pinned();
        // With a view holding the lock this would wait forever.
        put(&mvcc, "a", "2");
        put(&mvcc, "c", "1");
        let old = view.range(all(), RangeOptions::default()).unwrap();
        assert_eq!(old.rev, 3);
        assert_eq!(
            values(&old),
            [("a".into(), "1".into()), ("b".into(), "1".into())]
        );
        let new = mvcc.pinned().range(all(), RangeOptions::default()).unwrap();
        assert_eq!(new.rev, 5);
        assert_eq!(values(&new).len(), 3);
    }

    #[test]
    fn a_write_between_the_index_and_the_values_is_not_seen() {
        let mvcc = store();
        put(&mvcc, "a", "1");
        let view = mvcc.pinned();
        let got = view
            .range_pausing(all(), RangeOptions::default(), &mut || put(&mvcc, "a", "2"))
            .unwrap();
        assert_eq!(values(&got), [("a".into(), "1".into())]);
        assert_eq!(got.kvs[0].mod_revision, 2);
    }

    #[test]
    fn a_compaction_that_frees_what_is_being_read_starts_the_read_over() {
        let mvcc = store();
        put(&mvcc, "a", "1");
        put(&mvcc, "a", "2");
        let view = mvcc.pinned();
        put(&mvcc, "a", "3");
        // The compaction at 4 frees "a"@3, which the view at 3 reads.
        let got = view.range_pausing(all(), RangeOptions::default(), &mut || compact(&mvcc, 4));
        assert_eq!(got, Err(MvccError::Changed));
        // Already compacted when the range starts: the same.
        assert_eq!(
            view.range(all(), RangeOptions::default()),
            Err(MvccError::Changed)
        );
        // A revision the client asked for is compacted, as etcd says.
        let at = RangeOptions {
            rev: 3,
            ..RangeOptions::default()
        };
        assert_eq!(view.range(all(), at), Err(MvccError::Compacted));
        // Started over, the read sees the store after the compaction.
        let mut tries = 0;
        let got = mvcc
            .read_pinned(
                |v| {
                    tries += 1;
                    v.range(all(), RangeOptions::default())
                },
                |e| *e == MvccError::Changed,
            )
            .unwrap();
        assert_eq!(tries, 1);
        assert_eq!(values(&got), [("a".into(), "3".into())]);
    }

    #[test]
    fn a_compaction_below_the_view_changes_nothing() {
        let mvcc = store();
        put(&mvcc, "a", "1");
        put(&mvcc, "a", "2");
        put(&mvcc, "b", "1");
        let view = mvcc.pinned();
        let got = view
            .range_pausing(all(), RangeOptions::default(), &mut || compact(&mvcc, 3))
            .unwrap();
        assert_eq!(
            values(&got),
            [("a".into(), "2".into()), ("b".into(), "1".into())]
        );
    }

    #[test]
    fn an_installed_snapshot_starts_the_read_over() {
        // A view of the old tree reads it as it was while it lasts; once
        // dropped, the read starts over.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mvcc = Mvcc::open(db.open_tree("kv").unwrap()).unwrap();
        put(&mvcc, "a", "1");
        let view = mvcc.pinned();
        let other = db.open_tree("other").unwrap();
        let got = view.range_pausing(all(), RangeOptions::default(), &mut || {
            mvcc.replace_tree(other.clone()).unwrap();
            // As installing a snapshot does once the new tree is in place.
            db.drop_tree("kv").unwrap();
        });
        assert_eq!(got, Err(MvccError::Changed));
    }

    #[test]
    fn the_last_try_holds_the_lock_and_always_answers() {
        let mvcc = store();
        put(&mvcc, "a", "1");
        let mut tries = 0;
        let got = mvcc
            .read_pinned(
                |v| {
                    tries += 1;
                    if v.held.is_none() {
                        return Err(MvccError::Changed);
                    }
                    v.range(all(), RangeOptions::default())
                },
                |e| *e == MvccError::Changed,
            )
            .unwrap();
        assert_eq!(tries, ATTEMPTS);
        assert_eq!(values(&got), [("a".into(), "1".into())]);
    }
}
