//! The in-memory key index: for every key, the revisions at which it changed,
//! grouped into generations (a generation runs from a create to a delete).
//! Values live on disk, addressed by revision; the index answers "which
//! revision holds this key's value as of revision R".

use std::collections::BTreeMap;
use std::ops::Bound;

use super::revision::Revision;

/// Which keys a request names, decoded from etcd's (key, range_end) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: just `key`.
    Single(&'a [u8]),
    /// `range_end == "\0"`: every key >= `key`.
    From(&'a [u8]),
    /// Keys in `[key, range_end)`; empty when `range_end <= key`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Applies etcd's range_end rules.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    /// Whether `k` falls inside the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::From(key) => k >= key,
            KeyRange::Between(key, end) => k >= key && k < end,
        }
    }

    /// Whether two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange<'_>) -> bool {
        let (a_start, a_end) = self.bounds();
        let (b_start, b_end) = other.bounds();
        let a_before_b_end = match b_end {
            Bound::Unbounded => true,
            Bound::Included(e) => a_start <= e,
            Bound::Excluded(e) => a_start < e,
        };
        let b_before_a_end = match a_end {
            Bound::Unbounded => true,
            Bound::Included(e) => b_start <= e,
            Bound::Excluded(e) => b_start < e,
        };
        !self.is_empty() && !other.is_empty() && a_before_b_end && b_before_a_end
    }

    fn is_empty(&self) -> bool {
        matches!(*self, KeyRange::Between(key, end) if end <= key)
    }

    fn bounds(&self) -> (&'a [u8], Bound<&'a [u8]>) {
        match *self {
            KeyRange::Single(key) => (key, Bound::Included(key)),
            KeyRange::From(key) => (key, Bound::Unbounded),
            KeyRange::Between(key, end) => (key, Bound::Excluded(end)),
        }
    }
}

/// One life of a key: from the put that created it to the delete that ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Generation {
    /// Main revision of the put that created this generation (kept after
    /// compaction removes that put).
    pub(super) created: i64,
    /// Number of puts in this generation (the key's `version`).
    pub(super) version: i64,
    /// Revisions still held on disk, ascending. The last one is the tombstone
    /// when `closed` is set.
    pub(super) revs: Vec<Revision>,
    pub(super) closed: bool,
}

/// A key's history. Most keys of a large store were put once and never
/// changed or deleted since (or their older history was compacted away):
/// they hold one revision inline, with no allocation of their own. Every
/// other key holds its generations. The form is canonical (a history of
/// the first shape is always `One`), so equal histories compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum History {
    /// One live generation created by the put at this revision (so
    /// version 1), the only revision held.
    One(Revision),
    /// Anything else; never empty. Boxed so that the enum stays as small
    /// as `One` (24 bytes, a vector inline would make it 32): the map
    /// holds one per key.
    #[allow(clippy::box_collection)]
    Gens(Box<Vec<Generation>>),
}

impl History {
    fn new(rev: Revision, created: i64, version: i64) -> Self {
        History::Gens(Box::new(vec![Generation {
            created,
            version,
            revs: vec![rev],
            closed: false,
        }]))
        .canonical()
    }

    /// The generations, turning `One` into its explicit form for a change.
    fn gens_mut(&mut self) -> &mut Vec<Generation> {
        if let History::One(rev) = *self {
            *self = History::Gens(Box::new(vec![Generation {
                created: rev.main,
                version: 1,
                revs: vec![rev],
                closed: false,
            }]));
        }
        match self {
            History::Gens(gens) => gens,
            History::One(_) => unreachable!("turned into generations above"),
        }
    }

    /// `One` when the history has its shape; `None` when nothing is left.
    pub(super) fn canonical(self) -> Self {
        match self {
            History::Gens(gens) => match gens.as_slice() {
                [g] if !g.closed
                    && g.version == 1
                    && g.revs.len() == 1
                    && g.revs[0].main == g.created =>
                {
                    History::One(g.revs[0])
                }
                _ => History::Gens(gens),
            },
            one => one,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, History::Gens(gens) if gens.is_empty())
    }

    fn live(&self) -> Option<LiveKey> {
        match self {
            History::One(rev) => Some(LiveKey {
                created: rev.main,
                version: 1,
                modified: *rev,
            }),
            History::Gens(gens) => {
                let g = gens.last()?;
                if g.closed {
                    return None;
                }
                Some(LiveKey {
                    created: g.created,
                    version: g.version,
                    modified: *g.revs.last()?,
                })
            }
        }
    }

    fn visible(&self, at: i64) -> Option<Revision> {
        match self {
            History::One(rev) => (rev.main <= at).then_some(*rev),
            History::Gens(gens) => visible(gens, at),
        }
    }

    fn compact(&mut self, at: i64, freed: &mut Vec<Revision>) {
        // A lone put is the revision visible at any `at` from it on, and
        // nothing before it exists: compaction keeps it as it is.
        if let History::Gens(gens) = self {
            compact_key(gens, at, freed);
            let taken = std::mem::replace(self, History::Gens(Box::default()));
            *self = taken.canonical();
        }
    }
}

/// The live state of a key, as a put needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveKey {
    pub created: i64,
    pub version: i64,
    pub modified: Revision,
}

/// Revisions of every key, ordered by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    keys: BTreeMap<Box<[u8]>, History>,
}

impl KeyIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key with its history, in key order (for checkpoints).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &History)> {
        self.keys.iter().map(|(k, h)| (&k[..], h))
    }

    /// The index holding `entries`, which must be in strictly ascending
    /// key order with canonical, non-empty histories (a checkpoint's
    /// decoder checks both). Built in bulk: faster than inserting one key
    /// at a time, and the map's nodes come out full.
    pub(super) fn from_sorted(entries: Vec<(Box<[u8]>, History)>) -> Self {
        KeyIndex {
            keys: entries.into_iter().collect(),
        }
    }

    /// Number of keys with any history (live or not yet compacted).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Records a put of `key` at `rev`.
    pub fn put(&mut self, key: &[u8], rev: Revision) {
        self.restore(key, rev, rev.main, None);
    }

    /// Records a put read back from disk, whose key-value says when its
    /// generation was created and which version it is (the generation's
    /// first revisions may have been compacted away).
    pub fn restore(&mut self, key: &[u8], rev: Revision, created: i64, version: Option<i64>) {
        let Some(history) = self.keys.get_mut(key) else {
            let history = History::new(rev, created, version.unwrap_or(1));
            self.keys.insert(key.into(), history);
            return;
        };
        let gens = history.gens_mut();
        match gens.last_mut() {
            Some(g) if !g.closed => {
                g.version = version.unwrap_or(g.version + 1);
                g.revs.push(rev);
            }
            _ => gens.push(Generation {
                created,
                version: version.unwrap_or(1),
                revs: vec![rev],
                closed: false,
            }),
        }
    }

    /// Records a delete of `key` at `rev`. Returns false when the key was not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        let Some(history) = self.keys.get_mut(key) else {
            return false;
        };
        if history.live().is_none() {
            return false;
        }
        match history.gens_mut().last_mut() {
            Some(g) => {
                g.revs.push(rev);
                g.closed = true;
                true
            }
            None => false,
        }
    }

    /// The key's current state, if it is live.
    pub fn live(&self, key: &[u8]) -> Option<LiveKey> {
        self.keys.get(key)?.live()
    }

    /// Revision holding `key`'s value as of main revision `at`, if it existed then.
    pub fn get(&self, key: &[u8], at: i64) -> Option<Revision> {
        self.keys.get(key)?.visible(at)
    }

    /// Keys in `range` that exist at `at`, with the revision of their value,
    /// in key order. Visits the whole range; `limit` (0 = none) only caps
    /// what is returned. The second value is the total count.
    pub fn range(
        &self,
        range: KeyRange<'_>,
        at: i64,
        limit: usize,
    ) -> (Vec<(Vec<u8>, Revision)>, usize) {
        let mut out = Vec::new();
        let mut count = 0;
        let mut visit = |key: &[u8], history: &History| {
            if let Some(rev) = history.visible(at) {
                count += 1;
                if limit == 0 || out.len() < limit {
                    out.push((key.to_vec(), rev));
                }
            }
        };
        match range {
            KeyRange::Single(key) => {
                if let Some((k, h)) = self.keys.get_key_value(key) {
                    visit(k, h);
                }
            }
            KeyRange::From(key) => {
                for (k, h) in self
                    .keys
                    .range::<[u8], _>((Bound::Included(key), Bound::Unbounded))
                {
                    visit(k, h);
                }
            }
            KeyRange::Between(key, end) => {
                if end > key {
                    for (k, h) in self
                        .keys
                        .range::<[u8], _>((Bound::Included(key), Bound::Excluded(end)))
                    {
                        visit(k, h);
                    }
                }
            }
        }
        (out, count)
    }

    /// Forgets history older than main revision `at`: for each key, keeps the
    /// revision visible at `at` and everything after it. Returns the revisions
    /// that no longer need to be kept on disk.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut freed = Vec::new();
        self.keys.retain(|_, history| {
            history.compact(at, &mut freed);
            !history.is_empty()
        });
        freed
    }

    /// [`KeyIndex::compact`] for at most `max` keys, starting at `from`:
    /// returns what it freed and the key to go on from, if any keys are
    /// left. A key's revisions are all handled in one call.
    pub fn compact_some(
        &mut self,
        at: i64,
        from: &[u8],
        max: usize,
    ) -> (Vec<Revision>, Option<Vec<u8>>) {
        let mut freed = Vec::new();
        let mut emptied = Vec::new();
        let mut next = None;
        let keys = self
            .keys
            .range_mut::<[u8], _>((Bound::Included(from), Bound::Unbounded));
        for (i, (key, history)) in keys.enumerate() {
            if i == max {
                next = Some(key.to_vec());
                break;
            }
            history.compact(at, &mut freed);
            if history.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.keys.remove(&key);
        }
        (freed, next)
    }
}

fn visible(gens: &[Generation], at: i64) -> Option<Revision> {
    for g in gens.iter().rev() {
        match g.revs.first() {
            Some(first) if first.main <= at => {}
            _ => continue,
        }
        let n = g.revs.partition_point(|r| r.main <= at);
        let rev = g.revs[n - 1];
        if g.closed && n == g.revs.len() {
            return None;
        }
        return Some(rev);
    }
    None
}

fn compact_key(gens: &mut Vec<Generation>, at: i64, freed: &mut Vec<Revision>) {
    // The generation holding the revision visible at `at`: the last one that
    // starts at or before `at`. Earlier generations go entirely.
    let keep_from = gens
        .iter()
        .rposition(|g| g.revs.first().is_some_and(|r| r.main <= at))
        .unwrap_or(0);
    for g in gens.drain(..keep_from) {
        freed.extend(g.revs);
    }
    if let Some(g) = gens.first_mut() {
        let n = g.revs.partition_point(|r| r.main <= at);
        if n > 0 {
            let kept_tombstone = g.closed && n == g.revs.len();
            // Keep the revision visible at `at` unless it is a tombstone:
            // a deleted key needs nothing on disk once history before it is gone.
            let drop = if kept_tombstone { n } else { n - 1 };
            freed.extend(g.revs.drain(..drop));
        }
        if g.revs.is_empty() {
            gens.remove(0);
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod model_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn compacting_in_parts_frees_what_one_compaction_frees() {
        let mut whole = KeyIndex::new();
        for (i, key) in [&b"a"[..], b"b", b"c", b"d", b"e"].into_iter().enumerate() {
            let i = i as i64;
            whole.put(key, rev(2 + i));
            whole.put(key, rev(10 + i));
            if i % 2 == 0 {
                whole.tombstone(key, rev(20 + i));
            }
        }
        let mut parts = whole.clone();
        let mut expected = whole.compact(30);
        let mut freed = Vec::new();
        let mut from = Vec::new();
        let mut calls = 0;
        loop {
            calls += 1;
            let (some, next) = parts.compact_some(30, &from, 2);
            freed.extend(some);
            match next {
                Some(k) => from = k,
                None => break,
            }
        }
        assert_eq!(calls, 3);
        expected.sort();
        freed.sort();
        assert_eq!(freed, expected);
        assert_eq!(parts, whole);
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn put_then_get_at_each_revision() {
        let mut idx = KeyIndex::new();
        idx.put(b"a", rev(2));
        idx.put(b"a", rev(4));
        assert_eq!(idx.get(b"a", 1), None);
        assert_eq!(idx.get(b"a", 2), Some(rev(2)));
        assert_eq!(idx.get(b"a", 3), Some(rev(2)));
        assert_eq!(idx.get(b"a", 9), Some(rev(4)));
    }

    #[test]
    fn delete_hides_key_until_recreated_and_resets_version() {
        let mut idx = KeyIndex::new();
        idx.put(b"a", rev(2));
        idx.put(b"a", rev(3));
        assert!(idx.tombstone(b"a", rev(4)));
        assert_eq!(idx.get(b"a", 4), None);
        assert_eq!(idx.get(b"a", 3), Some(rev(3)));
        assert!(!idx.tombstone(b"a", rev(5)));
        idx.put(b"a", rev(6));
        let live = idx.live(b"a").unwrap();
        assert_eq!(live.version, 1);
        assert_eq!(live.created, 6);
        assert_eq!(idx.get(b"a", 5), None);
    }

    #[test]
    fn range_counts_all_but_returns_limit() {
        let mut idx = KeyIndex::new();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            idx.put(*k, rev(i as i64 + 2));
        }
        let (kvs, count) = idx.range(KeyRange::new(b"a", b"d"), 10, 2);
        assert_eq!(count, 3);
        assert_eq!(kvs.len(), 2);
        assert_eq!(kvs[0].0, b"a");
        let (_, all) = idx.range(KeyRange::new(b"\0", b"\0"), 10, 0);
        assert_eq!(all, 4);
        let (_, none) = idx.range(KeyRange::new(b"d", b"a"), 10, 0);
        assert_eq!(none, 0);
    }

    #[test]
    fn compaction_keeps_visible_revision_and_frees_older() {
        let mut idx = KeyIndex::new();
        idx.put(b"a", rev(2));
        idx.put(b"a", rev(3));
        idx.put(b"a", rev(5));
        let freed = idx.compact(4);
        assert_eq!(freed, vec![rev(2)]);
        assert_eq!(idx.get(b"a", 4), Some(rev(3)));
        assert_eq!(idx.get(b"a", 5), Some(rev(5)));
        assert_eq!(idx.live(b"a").unwrap().version, 3);
    }

    #[test]
    fn compaction_drops_deleted_keys_entirely() {
        let mut idx = KeyIndex::new();
        idx.put(b"a", rev(2));
        idx.tombstone(b"a", rev(3));
        let mut freed = idx.compact(3);
        freed.sort();
        assert_eq!(freed, vec![rev(2), rev(3)]);
        assert!(idx.is_empty());
    }

    #[test]
    fn ranges_overlap_as_intervals() {
        assert!(KeyRange::new(b"a", b"c").overlaps(&KeyRange::new(b"b", b"")));
        assert!(!KeyRange::new(b"a", b"c").overlaps(&KeyRange::new(b"c", b"")));
        assert!(KeyRange::new(b"a", b"\0").overlaps(&KeyRange::new(b"z", b"")));
        assert!(!KeyRange::new(b"c", b"a").overlaps(&KeyRange::new(b"b", b"")));
    }
}
