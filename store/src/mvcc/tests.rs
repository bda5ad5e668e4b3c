use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn temp_tree() -> (sled::Db, sled::Tree) {
    let db = sled::Config::new().temporary(true).open().expect("temp db");
    let tree = db.open_tree("state").expect("tree");
    (db, tree)
}

fn put(store: &Mvcc, key: &[u8], value: &[u8]) -> i64 {
    let mut w = store.write();
    w.begin();
    let rev = w.put(key, value.to_vec(), 0);
    w.end();
    w.commit().unwrap();
    rev
}

fn get_all(view: &impl ReadView, rev: i64) -> Result<Vec<KeyValue>, MvccError> {
    let opts = RangeOptions {
        rev,
        ..Default::default()
    };
    Ok(view.range(KeyRange::new(b"\0", b"\0"), opts)?.kvs)
}

#[test]
fn empty_store_starts_at_revision_one() {
    let (_db, tree) = temp_tree();
    let store = Mvcc::open(tree).unwrap();
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.compacted_revision(), -1);
}

#[test]
fn applied_writes_are_read_before_they_are_in_the_tree() {
    let (_db, tree) = temp_tree();
    let store = Arc::new(Mvcc::open(tree).unwrap());
    put(&store, b"a", b"1");
    store.settle();
    store.state.hold(true);
    // Committed (what the apply answers after), but not yet in the tree.
    assert_eq!(put(&store, b"a", b"2"), 3);
    assert_eq!(put(&store, b"b", b"1"), 4);
    {
        let mut w = store.write();
        w.set_meta("m", b"x");
        w.commit().unwrap();
    }
    assert_eq!(store.current_revision(), 4);
    let in_tree = |s: &Mvcc, rev: i64| {
        s.state
            .read_fresh()
            .tree
            .get(rev_key(Revision::new(rev, 0)))
            .unwrap()
            .is_some()
    };
    assert!(!in_tree(&store, 3) && !in_tree(&store, 4));
    // Views, the next apply and scans of history read them at once.
    let values = |kvs: Vec<KeyValue>| -> Vec<(Vec<u8>, i64)> {
        kvs.into_iter()
            .map(|kv| (kv.value, kv.mod_revision))
            .collect()
    };
    let expect = vec![(b"2".to_vec(), 3), (b"1".to_vec(), 4)];
    assert_eq!(values(get_all(&store.read(), 0).unwrap()), expect);
    assert_eq!(values(get_all(&store.pinned(), 0).unwrap()), expect);
    assert_eq!(values(get_all(&store.write(), 0).unwrap()), expect);
    let (events, to) = store
        .read()
        .history(KeyRange::new(b"\0", b"\0"), 2, 10, 100)
        .unwrap();
    assert_eq!(to, 4);
    assert_eq!(
        events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(store.read().get_at(b"a", 3).unwrap().value, b"2");
    assert_eq!(store.meta("m").unwrap().unwrap(), b"x");
    // What reads the tree alone waits for it.
    let settling = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.flush().unwrap();
            let tree = store.state.read().tree.clone();
            tree.get(rev_key(Revision::new(4, 0))).unwrap().is_some()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!settling.is_finished());
    store.state.hold(false);
    assert!(settling.join().unwrap());
    assert!(in_tree(&store, 3) && in_tree(&store, 4));
    assert_eq!(store.state.staged().len(), 0);
    assert_eq!(values(get_all(&store.read(), 0).unwrap()), expect);
}

#[test]
fn batches_of_many_applies_reach_the_tree_as_one_and_reopen_whole() {
    let (db, tree) = temp_tree();
    let store = Mvcc::open(tree.clone()).unwrap();
    for i in 0..50u32 {
        put(&store, format!("k{i:02}").as_bytes(), &i.to_be_bytes());
    }
    {
        let mut w = store.write();
        w.begin();
        assert_eq!(w.delete_range(KeyRange::new(b"k10", b"k20")), 10);
        w.end();
        w.commit().unwrap();
    }
    drop(store);
    // Dropping the store writes what was staged.
    let reopened = Mvcc::open(db.open_tree("state").unwrap()).unwrap();
    assert_eq!(reopened.current_revision(), 52);
    let kvs = get_all(&reopened.read(), 0).unwrap();
    assert_eq!(kvs.len(), 40);
    assert_eq!(kvs[10].key, b"k20");
    assert_eq!(reopened.state.staged().len(), 0);
}

#[test]
fn put_sets_create_mod_and_version() {
    let (_db, tree) = temp_tree();
    let store = Mvcc::open(tree).unwrap();
    assert_eq!(put(&store, b"a", b"1"), 2);
    assert_eq!(put(&store, b"a", b"2"), 3);
    let kvs = get_all(&store.read(), 0).unwrap();
    assert_eq!(kvs.len(), 1);
    assert_eq!(
        (kvs[0].create_revision, kvs[0].mod_revision, kvs[0].version),
        (2, 3, 2)
    );
    assert_eq!(kvs[0].value, b"2");
}

#[test]
fn txn_reads_see_earlier_writes_of_the_same_revision() {
    let (_db, tree) = temp_tree();
    let store = Mvcc::open(tree).unwrap();
    let mut w = store.write();
    w.begin();
    w.put(b"a", b"x".to_vec(), 0);
    let seen = w
        .range(KeyRange::new(b"a", b""), RangeOptions::default())
        .unwrap();
    assert_eq!(seen.rev, 2);
    assert_eq!(seen.kvs[0].value, b"x");
    w.put(b"b", b"y".to_vec(), 0);
    let (rev, events) = w.end().unwrap();
    assert_eq!(rev, 2);
    assert_eq!(events.len(), 2);
    w.commit().unwrap();
    assert_eq!(store.current_revision(), 2);
}

#[test]
fn delete_of_nothing_does_not_bump_revision() {
    let (_db, tree) = temp_tree();
    let store = Mvcc::open(tree).unwrap();
    let mut w = store.write();
    w.begin();
    assert_eq!(w.delete_range(KeyRange::new(b"a", b"z")), 0);
    assert!(w.end().is_none());
    w.commit().unwrap();
    assert_eq!(store.current_revision(), 1);
}

#[test]
fn reads_reject_future_and_compacted_revisions() {
    let (_db, tree) = temp_tree();
    let store = Mvcc::open(tree).unwrap();
    for i in 0..5 {
        put(&store, b"k", format!("{i}").as_bytes());
    }
    assert_eq!(get_all(&store.read(), 7), Err(MvccError::FutureRevision));
    let mut w = store.write();
    assert_eq!(w.compact(9), Err(MvccError::FutureRevision));
    w.compact(4).unwrap();
    assert_eq!(w.compact(4), Err(MvccError::Compacted));
    w.commit().unwrap();
    assert_eq!(get_all(&store.read(), 3), Err(MvccError::Compacted));
    assert_eq!(get_all(&store.read(), 4).unwrap()[0].value, b"2");
}

#[test]
fn hash_kv_agrees_on_equal_histories_and_tells_different_ones_apart() {
    let stores: Vec<_> = (0..3)
        .map(|_| {
            let (db, tree) = temp_tree();
            (db, Mvcc::open(tree).unwrap())
        })
        .collect();
    for (_, s) in &stores {
        put(s, b"a", b"1");
        put(s, b"b", b"2");
    }
    put(&stores[2].1, b"a", b"changed");
    let (h0, compacted, rev) = stores[0].1.hash_kv(0).unwrap();
    assert_eq!((compacted, rev), (-1, 3));
    assert_eq!(stores[1].1.hash_kv(0).unwrap().0, h0);
    // The same history up to revision 3 hashes alike; the later write shows.
    assert_eq!(stores[2].1.hash_kv(3).unwrap().0, h0);
    assert_ne!(stores[2].1.hash_kv(0).unwrap().0, h0);
    assert_ne!(stores[0].1.hash_kv(2).unwrap().0, h0);
    assert!(matches!(
        stores[0].1.hash_kv(9),
        Err(MvccError::FutureRevision)
    ));
    let mut w = stores[2].1.write();
    w.compact(3).unwrap();
    w.commit().unwrap();
    assert!(matches!(stores[2].1.hash_kv(2), Err(MvccError::Compacted)));
    assert_eq!(stores[2].1.hash_kv(0).unwrap().1, 3);
}

#[test]
fn compaction_frees_disk_entries() {
    let (_db, tree) = temp_tree();
    let store = Mvcc::open(tree.clone()).unwrap();
    for i in 0..10 {
        put(&store, b"k", format!("{i}").as_bytes());
    }
    store.settle();
    let before = tree.scan_prefix([REV_PREFIX]).count();
    let mut w = store.write();
    w.compact(11).unwrap();
    w.commit().unwrap();
    // Freed records are deleted by the reclaimer's thread.
    store.reclaimer.wait_idle();
    let after = tree.scan_prefix([REV_PREFIX]).count();
    assert_eq!((before, after), (10, 1));
}

#[test]
fn reopen_rebuilds_index_and_revisions() {
    let (_db, tree) = temp_tree();
    {
        let store = Mvcc::open(tree.clone()).unwrap();
        put(&store, b"a", b"1");
        put(&store, b"b", b"2");
        let mut w = store.write();
        w.begin();
        w.delete_range(KeyRange::new(b"a", b""));
        w.end();
        w.commit().unwrap();
    }
    let store = Mvcc::open(tree).unwrap();
    assert_eq!(store.current_revision(), 4);
    let kvs = get_all(&store.read(), 0).unwrap();
    assert_eq!(
        kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"b".to_vec()]
    );
    assert_eq!(get_all(&store.read(), 3).unwrap().len(), 2);
}

/// One step of the model-based test.
#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, u8),
    Compact(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..8, 0u8..9).prop_map(|(a, b)| Op::Delete(a, b)),
        1 => any::<u8>().prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// The model: the full map of live keys after every revision.
struct Model {
    history: Vec<BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn at(&self, rev: i64) -> &BTreeMap<Vec<u8>, KeyValue> {
        &self.history[rev as usize]
    }
    fn current(&self) -> i64 {
        self.history.len() as i64 - 1
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_matches_model_at_every_revision(ops in prop::collection::vec(op(), 1..60)) {
        let (_db, tree) = temp_tree();
        let mut store = Mvcc::open(tree.clone()).unwrap();
        // history[0] is unused; revision 1 is the empty store.
        let mut model = Model { history: vec![BTreeMap::new(), BTreeMap::new()], compacted: -1 };
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let key = vec![b'a' + k];
                    let mut next = model.at(model.current()).clone();
                    let rev = model.current() + 1;
                    let (create, version) = next.get(&key).map(|kv| (kv.create_revision, kv.version + 1)).unwrap_or((rev, 1));
                    next.insert(key.clone(), KeyValue { key: key.clone(), create_revision: create, mod_revision: rev, version, value: vec![v], lease: 0 });
                    model.history.push(next);
                    prop_assert_eq!(put(&store, &key, &[v]), rev);
                }
                Op::Delete(a, b) => {
                    let (start, end) = (vec![b'a' + a], vec![b'a' + b]);
                    let mut next = model.at(model.current()).clone();
                    let before = next.len();
                    next.retain(|k, _| !(k >= &start && k < &end));
                    let deleted = before - next.len();
                    if deleted > 0 {
                        model.history.push(next);
                    }
                    let mut w = store.write();
                    w.begin();
                    prop_assert_eq!(w.delete_range(KeyRange::new(&start, &end)), deleted as i64);
                    w.end();
                    w.commit().unwrap();
                }
                Op::Compact(r) => {
                    let at = i64::from(r) % (model.current() + 2);
                    let mut w = store.write();
                    let got = w.compact(at);
                    w.commit().unwrap();
                    if at <= model.compacted {
                        prop_assert_eq!(got, Err(MvccError::Compacted));
                    } else if at > model.current() {
                        prop_assert_eq!(got, Err(MvccError::FutureRevision));
                    } else {
                        prop_assert_eq!(got, Ok(()));
                        model.compacted = at;
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = Mvcc::open(tree.clone()).unwrap();
                }
            }
            prop_assert_eq!(store.current_revision(), model.current());
            let view = store.read();
            for rev in 1..=model.current() {
                let got = get_all(&view, rev);
                if rev < model.compacted {
                    prop_assert_eq!(got, Err(MvccError::Compacted));
                } else {
                    let want: Vec<KeyValue> = model.at(rev).values().cloned().collect();
                    prop_assert_eq!(got.unwrap(), want);
                }
            }
        }
    }
}
