//! The writes applied but not yet in the tree: what the
//! [committer](super::committer) holds until its next commit to sled.
//!
//! Reads look here before the tree, so an applied write is seen at once
//! while sled gets the writes of many applies in one batch. An entry stays
//! until the batch holding it is in the tree, and only then goes: at every
//! moment a write is here, in the tree, or both (with the same value).
//! A range read therefore takes its copy of the entries here before it
//! reads the tree: whatever left this map after the copy was taken was in
//! the tree before it left.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use sled::IVec;

/// One write of an applied batch: a value, or `None` for a removal.
pub(super) type Op = (IVec, Option<IVec>);

#[derive(Default)]
pub(super) struct Staged {
    /// Tree key -> (the batch that last wrote it, what it wrote).
    map: RwLock<BTreeMap<IVec, (u64, Option<IVec>)>>,
    /// `map.len()`, readable without the lock.
    len: AtomicUsize,
    /// The store's epoch the entries belong to (see [`super::State`]): a
    /// view of an earlier tree must not read a later tree's writes.
    epoch: AtomicU64,
}

impl Staged {
    /// Records the writes of batch `seq`, in order (a later write of a key
    /// replaces an earlier one, as in a sled batch).
    pub(super) fn stage(&self, seq: u64, ops: &[Op]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in ops {
            map.insert(k.clone(), (seq, v.clone()));
        }
        self.len.store(map.len(), Ordering::SeqCst);
    }

    /// Forgets what batches up to `seq` wrote: they are in the tree now.
    pub(super) fn written(&self, seq: u64) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (s, _)| *s > seq);
        self.len.store(map.len(), Ordering::SeqCst);
    }

    /// How many keys wait for the tree.
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Moves to the store's next tree; nothing may be staged.
    pub(super) fn set_epoch(&self, epoch: u64) {
        debug_assert_eq!(self.len(), 0);
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// What `key` holds for a reader of epoch `epoch`: a staged write, or
    /// the tree's value.
    pub(super) fn get(
        &self,
        epoch: u64,
        tree: &sled::Tree,
        key: &[u8],
    ) -> sled::Result<Option<IVec>> {
        if self.len() > 0 && self.epoch.load(Ordering::SeqCst) == epoch {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, v)) = map.get(key) {
                return Ok(v.clone());
            }
        }
        tree.get(key)
    }

    /// The entries of `tree` with keys in `(from, to)`, in key order, as
    /// the staged writes change them.
    pub(super) fn range(
        &self,
        epoch: u64,
        tree: &sled::Tree,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Merged {
        let mut staged = Vec::new();
        if self.len() > 0 && self.epoch.load(Ordering::SeqCst) == epoch {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            staged.extend(
                map.range::<[u8], _>((from, to))
                    .map(|(k, (_, v))| (k.clone(), v.clone())),
            );
        }
        // Copied before the tree is read: see the module's note.
        let owned = |b: Bound<&[u8]>| b.map(IVec::from);
        Merged {
            staged: staged.into_iter().peekable(),
            tree: tree.range((owned(from), owned(to))).peekable(),
        }
    }

    /// The entries whose keys start with `prefix`, as [`Staged::range`].
    pub(super) fn scan_prefix(&self, epoch: u64, tree: &sled::Tree, prefix: &[u8]) -> Merged {
        match prefix_end(prefix) {
            Some(end) => self.range(epoch, tree, Bound::Included(prefix), Bound::Excluded(&end)),
            None => self.range(epoch, tree, Bound::Included(prefix), Bound::Unbounded),
        }
    }
}

/// The smallest key after every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The tree's entries in a range with the staged writes laid over them.
pub(super) struct Merged {
    staged: Peekable<std::vec::IntoIter<Op>>,
    tree: Peekable<sled::Iter>,
}

impl Iterator for Merged {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let tree_key = match self.tree.peek() {
                Some(Err(_)) => return self.tree.next(),
                Some(Ok((k, _))) => Some(k.clone()),
                None => None,
            };
            let Some((staged_key, _)) = self.staged.peek() else {
                return self.tree.next();
            };
            match &tree_key {
                Some(t) if t < staged_key => return self.tree.next(),
                Some(t) if t == staged_key => {
                    // The staged write replaces the tree's value.
                    self.tree.next();
                }
                _ => {}
            }
            match self.staged.next() {
                Some((k, Some(v))) => return Some(Ok((k, v))),
                // Removed by a staged write.
                Some((_, None)) => continue,
                None => return self.tree.next(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (sled::Db, sled::Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        (db, tree)
    }

    fn op(k: &str, v: Option<&str>) -> Op {
        (k.as_bytes().into(), v.map(|v| v.as_bytes().into()))
    }

    fn all(merged: Merged) -> Vec<(String, String)> {
        merged
            .map(|r| {
                let (k, v) = r.unwrap();
                (
                    String::from_utf8_lossy(&k).into(),
                    String::from_utf8_lossy(&v).into(),
                )
            })
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn staged_writes_lie_over_the_tree_until_written() {
        let (_db, tree) = tree();
        for (k, v) in [("a", "t"), ("b", "t"), ("d", "t"), ("f", "t")] {
            tree.insert(k, v).unwrap();
        }
        let staged = Staged::default();
        staged.stage(1, &[op("b", Some("s1")), op("c", Some("s1"))]);
        staged.stage(
            2,
            &[op("d", None), op("c", Some("s2")), op("g", Some("s2"))],
        );
        assert_eq!(staged.len(), 4);
        let everything = || staged.range(0, &tree, Bound::Unbounded, Bound::Unbounded);
        // The same before any batch is written, after the first, after both.
        let whole = pairs(&[
            ("a", "t"),
            ("b", "s1"),
            ("c", "s2"),
            ("f", "t"),
            ("g", "s2"),
        ]);
        assert_eq!(all(everything()), whole);
        assert_eq!(
            all(staged.range(
                0,
                &tree,
                Bound::Excluded(b"a".as_slice()),
                Bound::Included(b"d".as_slice())
            )),
            pairs(&[("b", "s1"), ("c", "s2")])
        );
        assert_eq!(staged.get(0, &tree, b"d").unwrap(), None);
        assert_eq!(staged.get(0, &tree, b"c").unwrap().unwrap(), b"s2");
        assert_eq!(staged.get(0, &tree, b"a").unwrap().unwrap(), b"t");
        // Another epoch's reader sees the tree alone.
        assert_eq!(staged.get(1, &tree, b"c").unwrap(), None);
        assert_eq!(
            all(staged.range(1, &tree, Bound::Unbounded, Bound::Unbounded)).len(),
            4
        );

        // Batch 1 reaches the tree: "c" stays, batch 2 wrote it last.
        tree.insert("b", "s1").unwrap();
        tree.insert("c", "s1").unwrap();
        staged.written(1);
        assert_eq!(staged.len(), 3);
        assert_eq!(all(everything()), whole);
        tree.remove("d").unwrap();
        tree.insert("c", "s2").unwrap();
        tree.insert("g", "s2").unwrap();
        staged.written(2);
        assert_eq!(staged.len(), 0);
        assert_eq!(all(everything()), whole);
    }

    #[test]
    fn a_prefix_scan_covers_exactly_the_prefix() {
        let (_db, tree) = tree();
        for k in ["l", "m", "mz", "n"] {
            tree.insert(k, "t").unwrap();
        }
        let staged = Staged::default();
        staged.stage(1, &[op("m\u{1}", Some("s")), op("n", None), op("m", None)]);
        let keys: Vec<String> = all(staged.scan_prefix(0, &tree, b"m"))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["m\u{1}", "mz"]);
        assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255, 255]), None);
    }
}
