//! Defragmentation keeps every kept record and the metadata, shrinks the
//! database, survives reopening, and leaves the old one behind only until
//! the next start.

use std::sync::Arc;

use super::*;
use crate::mvcc::{KeyRange, Mvcc, RangeOptions, ReadView};

fn open(dir: &Path) -> (Arc<Backend>, Arc<Mvcc>) {
    let open_db: OpenDb = Box::new(|p: &Path| sled::Config::new().path(p).open());
    let backend = Arc::new(Backend::open_in(dir, open_db).unwrap());
    let mvcc = Arc::new(Mvcc::open(backend.state_tree().unwrap()).unwrap());
    (backend, mvcc)
}

/// Opens `dir` again in this process: sled's background flusher may hold
/// the dropped database's file lock a little longer (a new process would
/// not meet it), so opening is retried for a few seconds.
fn reopen(dir: &Path) -> (Arc<Backend>, Arc<Mvcc>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let open_db: OpenDb = Box::new(|p: &Path| sled::Config::new().path(p).open());
        match Backend::open_in(dir, open_db) {
            Ok(backend) => {
                let backend = Arc::new(backend);
                let mvcc = Arc::new(Mvcc::open(backend.state_tree().unwrap()).unwrap());
                return (backend, mvcc);
            }
            Err(e) if std::time::Instant::now() > deadline => panic!("reopening: {e:?}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

fn write(mvcc: &Mvcc, f: impl FnOnce(&mut crate::mvcc::WriteTxn<'_>)) {
    let mut txn = mvcc.write();
    txn.begin();
    f(&mut txn);
    txn.end();
    txn.commit().unwrap();
}

fn all(mvcc: &Mvcc, rev: i64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let opts = RangeOptions {
        rev,
        ..Default::default()
    };
    mvcc.read()
        .range(KeyRange::From(b""), opts)
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect()
}

#[test]
fn a_defragmented_store_keeps_what_it_held_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mvcc) = open(dir.path());
    let big = vec![b'x'; 100_000];
    for i in 0..200 {
        write(&mvcc, |t| {
            t.put(format!("k{i:03}").as_bytes(), big.clone(), 0);
        });
    }
    write(&mvcc, |t| {
        t.put(b"keep", b"me".to_vec(), 0);
    });
    write(&mvcc, |t| {
        t.put(b"keep", b"me too".to_vec(), 0);
        t.set_meta("lease/0000000000000001", &60i64.to_be_bytes());
    });
    write(&mvcc, |t| {
        t.delete_range(KeyRange::Between(b"k", b"l"));
    });
    let before_compaction = mvcc.current_revision();
    write(&mvcc, |t| {
        t.put(b"after", b"compaction point".to_vec(), 0);
    });
    write(&mvcc, |t| t.compact(before_compaction).unwrap());
    backend.flush().unwrap();
    let now = mvcc.current_revision();
    let expected = all(&mvcc, now);
    let expected_then = all(&mvcc, before_compaction);

    let done = backend.defragment(&mvcc).unwrap();
    assert!(done.after < done.before / 4, "{done:?}");
    assert_eq!(all(&mvcc, now), expected);
    assert_eq!(all(&mvcc, before_compaction), expected_then);
    assert!(mvcc.meta("lease/0000000000000001").unwrap().is_some());
    write(&mvcc, |t| {
        t.put(b"written", b"after the defragmentation".to_vec(), 0);
    });
    let after = all(&mvcc, 0);
    assert_eq!(after.len(), expected.len() + 1);
    backend.flush().unwrap();
    drop(mvcc);
    drop(backend);

    let (_backend, reopened) = reopen(dir.path());
    assert_eq!(all(&reopened, 0), after);
    assert_eq!(all(&reopened, before_compaction), expected_then);
    let dbs: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| db_number(n).is_some())
        .collect();
    assert_eq!(dbs, vec!["db.1".to_string()]);
}

#[test]
fn a_defragmentation_cut_short_leaves_the_old_database_live() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (backend, mvcc) = open(dir.path());
        write(&mvcc, |t| {
            t.put(b"a", b"1".to_vec(), 0);
        });
        backend.flush().unwrap();
    }
    // A new database that was being filled when the member died.
    fs::create_dir(dir.path().join("db.1")).unwrap();
    fs::write(dir.path().join("db.1").join("junk"), b"half").unwrap();
    let (_backend, mvcc) = reopen(dir.path());
    assert_eq!(all(&mvcc, 0).len(), 1);
    assert!(!dir.path().join("db.1").exists());
}
