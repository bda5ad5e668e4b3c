//! Whole-store scans do not hold up writes, and compactions free their
//! records later without any scan seeing them meanwhile.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn store() -> (sled::Db, Arc<Mvcc>) {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let mvcc = Arc::new(Mvcc::open(db.open_tree("state").unwrap()).unwrap());
    (db, mvcc)
}

fn write(mvcc: &Mvcc, f: impl FnOnce(&mut WriteTxn<'_>)) {
    let mut txn = mvcc.write();
    txn.begin();
    f(&mut txn);
    txn.end();
    txn.commit().unwrap();
    // Tests here count the tree's records directly, not through a view.
    mvcc.settle();
}

/// A store with `n` keys, each written twice (so scans span chunks).
fn filled(n: usize) -> (sled::Db, Arc<Mvcc>) {
    let (db, mvcc) = store();
    for round in 0..2 {
        for i in 0..n {
            write(&mvcc, |t| {
                t.put(
                    format!("k{i:05}").as_bytes(),
                    format!("v{round}").into_bytes(),
                    0,
                );
            });
        }
    }
    (db, mvcc)
}

/// From inside a scan (between two chunks): a write on another thread
/// must finish while the scan is still under way.
fn write_meanwhile(mvcc: &Arc<Mvcc>) -> Result<(), String> {
    let (done, finished) = mpsc::channel();
    let writer = mvcc.clone();
    std::thread::spawn(move || {
        write(&writer, |t| {
            t.put(b"written-during-the-scan", b"x".to_vec(), 0);
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "a write waited for the scan".to_string())
}

#[test]
fn a_hash_in_progress_does_not_hold_up_writes_and_hashes_its_own_revision() {
    let (_db, mvcc) = filled(1500);
    let rev = mvcc.current_revision();
    let (expected, _, _) = mvcc.hash_kv(rev).unwrap();
    let mut outcome = None;
    let mut calls = 0;
    let (hash, _, hashed) = mvcc
        .hash_kv_pausing(0, &mut || {
            calls += 1;
            if calls == 2 {
                outcome = Some(write_meanwhile(&mvcc));
            }
        })
        .unwrap();
    assert_eq!(outcome, Some(Ok(())));
    assert_eq!(hashed, rev);
    assert_eq!(hash, expected);
    assert_eq!(mvcc.current_revision(), rev + 1);
}

#[test]
fn an_export_in_progress_does_not_hold_up_writes_and_exports_one_moment() {
    let (_db, mvcc) = filled(1500);
    let mut before = Vec::new();
    mvcc.export_in_one_view(&mut |k, v| {
        before.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    let mut exported = Vec::new();
    let mut outcome = None;
    let mut calls = 0;
    mvcc.export_pausing(
        &mut |k, v| {
            exported.push((k.to_vec(), v.to_vec()));
            Ok(())
        },
        &mut || {
            calls += 1;
            if calls == 2 {
                outcome = Some(write_meanwhile(&mvcc));
            }
        },
    )
    .unwrap();
    assert_eq!(outcome, Some(Ok(())));
    assert_eq!(exported, before);
}

/// The sink of an export may wait (on a slow disk, say) without holding
/// up writes: it gets each chunk's records after the chunk's view is gone.
#[test]
fn a_sink_that_waits_does_not_hold_up_writes() {
    let (_db, mvcc) = filled(1500);
    let mut outcome = None;
    let mut seen = 0;
    mvcc.export_to(&mut |_, _| {
        seen += 1;
        if seen == 10 {
            outcome = Some(write_meanwhile(&mvcc));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(outcome, Some(Ok(())));
}

#[test]
fn an_export_that_a_compaction_interrupts_says_so() {
    let (_db, mvcc) = filled(1500);
    let mut calls = 0;
    let result = mvcc.export_pausing(&mut |_, _| Ok(()), &mut || {
        calls += 1;
        if calls == 2 {
            let at = mvcc.current_revision();
            write(&mvcc, |t| t.compact(at).unwrap());
        }
    });
    assert_eq!(result, Err(MvccError::Changed));
}

/// Raw records of the store's tree (freed ones included).
fn raw_records(db: &sled::Db) -> usize {
    db.open_tree("state")
        .unwrap()
        .scan_prefix([REV_PREFIX])
        .count()
}

#[test]
fn freed_records_are_deleted_later_and_no_reader_sees_them_meanwhile() {
    let (db, mvcc) = store();
    write(&mvcc, |t| {
        t.put(b"a", b"1".to_vec(), 0);
        t.put(b"b", b"1".to_vec(), 0);
    }); // 2
    write(&mvcc, |t| {
        t.put(b"a", b"2".to_vec(), 0);
    }); // 3
    write(&mvcc, |t| {
        t.delete_range(KeyRange::Single(b"b"));
    }); // 4
    assert_eq!(raw_records(&db), 4);

    mvcc.reclaimer.hold(true);
    write(&mvcc, |t| t.compact(4).unwrap());
    // a@2, b@2 and b's delete at 4 are freed, not yet deleted.
    assert_eq!(raw_records(&db), 4);
    let view = mvcc.read();
    let kept: Vec<_> = view
        .revisions(Revision::new(0, 0), 4, 100)
        .unwrap()
        .into_iter()
        .map(|r| (r.rev.main, r.kv.key))
        .collect();
    assert_eq!(kept, vec![(3, b"a".to_vec())]);
    let (events, _) = view.history(KeyRange::From(b""), 4, 4, 10).unwrap();
    assert!(events.is_empty(), "{events:?}");
    drop(view);

    mvcc.reclaimer.hold(false);
    mvcc.reclaimer.wait_idle();
    assert_eq!(raw_records(&db), 1);
    // Reopened, the store is the same.
    let (hash, compacted, _) = mvcc.hash_kv(0).unwrap();
    assert_eq!(compacted, 4);
    drop(mvcc);
    let reopened = Mvcc::open(db.open_tree("state").unwrap()).unwrap();
    assert_eq!(reopened.hash_kv(0).unwrap().0, hash);
}

/// What a crash midway through deleting freed records leaves (the oldest
/// deleted, the newer not yet) reads, once opened again, as the whole
/// compaction would.
#[test]
fn a_store_opened_after_a_crash_midway_through_deleting_reads_as_compacted() {
    let (db, mvcc) = store();
    write(&mvcc, |t| {
        t.put(b"a", b"1".to_vec(), 0);
    }); // 2
    write(&mvcc, |t| {
        t.delete_range(KeyRange::Single(b"a"));
    }); // 3
    write(&mvcc, |t| {
        t.put(b"b", b"1".to_vec(), 0);
    }); // 4
    write(&mvcc, |t| {
        t.put(b"a", b"2".to_vec(), 0);
    }); // 5
    mvcc.reclaimer.hold(true);
    write(&mvcc, |t| t.compact(4).unwrap());
    // Freed: a@2 and its delete a@3. The crash came after the first.
    let tree = db.open_tree("state").unwrap();
    tree.remove(rev_key(Revision::new(2, 0))).unwrap();
    let reopened = Mvcc::open(tree.clone()).unwrap();
    let keys_at = |rev: i64| -> Vec<(Vec<u8>, Vec<u8>)> {
        let opts = RangeOptions {
            rev,
            ..Default::default()
        };
        reopened
            .read()
            .range(KeyRange::From(b""), opts)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect()
    };
    assert_eq!(keys_at(4), vec![(b"b".to_vec(), b"1".to_vec())]);
    assert_eq!(
        keys_at(5),
        vec![
            (b"a".to_vec(), b"2".to_vec()),
            (b"b".to_vec(), b"1".to_vec())
        ]
    );
    // The leftover delete is gone too.
    assert_eq!(raw_records(&db), 2);
    mvcc.reclaimer.hold(false);
}

#[test]
fn a_compaction_applies_at_once_and_its_index_is_pruned_afterwards_in_parts() {
    // More keys than one part prunes.
    let n = reclaim::KEYS + 2000;
    let (db, mvcc) = filled(n);
    let top = mvcc.current_revision();
    mvcc.reclaimer.hold(true);
    write(&mvcc, |t| t.compact(top).unwrap());
    // Applied: reads below are refused, the index still holds every
    // revision and nothing is deleted yet.
    assert_eq!(mvcc.compacted_revision(), top);
    assert_eq!(raw_records(&db), 2 * n);
    let old = RangeOptions {
        rev: top - 1,
        ..RangeOptions::default()
    };
    assert_eq!(
        mvcc.read().range(KeyRange::From(b""), old).unwrap_err(),
        MvccError::Compacted
    );
    // Reads at the compacted revision and writes go on meanwhile.
    let at_top = RangeOptions {
        rev: top,
        ..RangeOptions::default()
    };
    let seen = mvcc.pinned().range(KeyRange::From(b""), at_top).unwrap();
    assert_eq!(seen.count, n);
    assert!(seen.kvs.iter().all(|kv| kv.value == b"v1"));
    write(&mvcc, |t| {
        t.delete_range(KeyRange::Single(b"k00000"));
    });

    mvcc.reclaimer.hold(false);
    mvcc.reclaimer.wait_idle();
    // Every key's older record is gone; k00000's last put and its delete
    // came at or after the compaction and stay.
    assert_eq!(raw_records(&db), n + 1);
    let now = mvcc.read().range(KeyRange::From(b""), at_top).unwrap();
    assert_eq!(now.kvs, seen.kvs);
    let (hash, _, _) = mvcc.hash_kv(0).unwrap();
    drop(mvcc);
    let reopened = Mvcc::open(db.open_tree("state").unwrap()).unwrap();
    assert_eq!(reopened.hash_kv(0).unwrap().0, hash);
}
