//! The key index against the plain representation it replaced (every key
//! with a vector of generations, no inline form): the same operations give
//! the same answers for reads at every revision, ranges, live state and
//! compaction.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// The plain index: each key's generations as a vector, always.
#[derive(Default)]
struct Plain {
    keys: BTreeMap<Vec<u8>, Vec<Generation>>,
}

impl Plain {
    fn restore(&mut self, key: &[u8], rev: Revision, created: i64, version: Option<i64>) {
        let gens = self.keys.entry(key.to_vec()).or_default();
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

    fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        match self.keys.get_mut(key).and_then(|g| g.last_mut()) {
            Some(g) if !g.closed => {
                g.revs.push(rev);
                g.closed = true;
                true
            }
            _ => false,
        }
    }

    fn live(&self, key: &[u8]) -> Option<LiveKey> {
        let g = self.keys.get(key)?.last()?;
        (!g.closed).then(|| LiveKey {
            created: g.created,
            version: g.version,
            modified: *g.revs.last().expect("a generation holds a revision"),
        })
    }

    fn range(&self, at: i64) -> Vec<(Vec<u8>, Revision)> {
        self.keys
            .iter()
            .filter_map(|(k, gens)| visible(gens, at).map(|r| (k.clone(), r)))
            .collect()
    }

    fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut freed = Vec::new();
        self.keys.retain(|_, gens| {
            compact_key(gens, at, &mut freed);
            !gens.is_empty()
        });
        freed
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8),
    /// A put read back from disk with the version its key-value carries.
    Restore(u8, i64),
    Delete(u8),
    /// Compact at this many revisions back from the newest.
    Compact(i64),
    /// The same, in parts of this many keys.
    CompactParts(i64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6).prop_map(Op::Put),
        1 => (0u8..6, 1i64..4).prop_map(|(k, v)| Op::Restore(k, v)),
        2 => (0u8..6).prop_map(Op::Delete),
        1 => (0i64..8).prop_map(Op::Compact),
        1 => (0i64..8, 1usize..4).prop_map(|(b, n)| Op::CompactParts(b, n)),
    ]
}

fn sorted(mut revs: Vec<Revision>) -> Vec<Revision> {
    revs.sort();
    revs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_answers_as_the_plain_representation(ops in prop::collection::vec(op(), 1..80)) {
        let mut index = KeyIndex::new();
        let mut plain = Plain::default();
        let mut rev = 1;
        let mut compacted = 0;
        for op in ops {
            match op {
                Op::Put(k) => {
                    rev += 1;
                    index.put(&[k], Revision::new(rev, 0));
                    plain.restore(&[k], Revision::new(rev, 0), rev, None);
                }
                Op::Restore(k, version) => {
                    rev += 1;
                    let created = plain.live(&[k]).map_or(rev, |l| l.created);
                    index.restore(&[k], Revision::new(rev, 1), created, Some(version));
                    plain.restore(&[k], Revision::new(rev, 1), created, Some(version));
                }
                Op::Delete(k) => {
                    let next = Revision::new(rev + 1, 0);
                    let deleted = plain.tombstone(&[k], next);
                    prop_assert_eq!(index.tombstone(&[k], next), deleted);
                    if deleted {
                        rev += 1;
                    }
                }
                Op::Compact(back) => {
                    let at = (rev - back).max(compacted);
                    compacted = at;
                    prop_assert_eq!(sorted(index.compact(at)), sorted(plain.compact(at)));
                }
                Op::CompactParts(back, max) => {
                    let at = (rev - back).max(compacted);
                    compacted = at;
                    let mut freed = Vec::new();
                    let mut from = Vec::new();
                    loop {
                        let (some, next) = index.compact_some(at, &from, max);
                        freed.extend(some);
                        match next {
                            Some(k) => from = k,
                            None => break,
                        }
                    }
                    prop_assert_eq!(sorted(freed), sorted(plain.compact(at)));
                }
            }
            prop_assert_eq!(index.len(), plain.keys.len());
            for k in 0u8..6 {
                prop_assert_eq!(index.live(&[k]), plain.live(&[k]));
            }
            for at in compacted..=rev + 1 {
                let want = plain.range(at);
                let (got, count) = index.range(KeyRange::new(&[0], &[0]), at, 0);
                prop_assert_eq!(count, want.len());
                prop_assert_eq!(&got, &want);
                for k in 0u8..6 {
                    let plain_get = plain.keys.get(&[k][..]).and_then(|g| visible(g, at));
                    prop_assert_eq!(index.get(&[k], at), plain_get);
                }
            }
        }
    }
}

#[test]
fn a_key_put_once_holds_no_allocation_of_its_own() {
    let mut index = KeyIndex::new();
    index.put(b"a", Revision::new(2, 0));
    index.restore(b"b", Revision::new(3, 0), 3, Some(1));
    index.restore(b"c", Revision::new(4, 0), 2, Some(3));
    assert_eq!(index.keys[&b"a"[..]], History::One(Revision::new(2, 0)));
    assert_eq!(index.keys[&b"b"[..]], History::One(Revision::new(3, 0)));
    assert!(matches!(index.keys[&b"c"[..]], History::Gens(_)));
    // Updated, then compacted down to its last put: a history like any
    // other with more than one put, so its version stays 2.
    index.put(b"a", Revision::new(5, 0));
    index.compact(5);
    assert!(matches!(index.keys[&b"a"[..]], History::Gens(_)));
    assert_eq!(index.live(b"a").map(|l| l.version), Some(2));
    // Deleted and put again, then compacted: the new generation alone,
    // created by its only put.
    index.tombstone(b"b", Revision::new(6, 0));
    index.put(b"b", Revision::new(7, 0));
    assert!(matches!(index.keys[&b"b"[..]], History::Gens(_)));
    index.compact(7);
    assert_eq!(index.keys[&b"b"[..]], History::One(Revision::new(7, 0)));
}

#[test]
fn a_history_is_as_small_as_one_revision_and_a_tag() {
    assert_eq!(std::mem::size_of::<History>(), 24);
}
