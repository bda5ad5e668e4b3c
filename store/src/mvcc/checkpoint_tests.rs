//! Checkpoints round-trip, refuse torn, corrupt and stale files, and a
//! store opened from one answers every read exactly as a rebuilt one.

use proptest::prelude::*;

use super::super::{KeyRange, RangeOptions, ReadView, WriteTxn};
use super::*;

const APPLIED: &str = "applied";

fn rev(main: i64, sub: i64) -> Revision {
    Revision::new(main, sub)
}

fn sample() -> (Stamp, KeyIndex, LeaseIndex) {
    let mut index = KeyIndex::new();
    index.put(b"a", rev(2, 0));
    index.put(b"ab", rev(3, 0));
    index.put(b"ab", rev(4, 1));
    index.put(b"b", rev(5, 0));
    index.tombstone(b"b", rev(6, 0));
    index.put(b"b", rev(7, 0));
    index.put(b"c", rev(8, 0));
    index.tombstone(b"c", rev(9, 0));
    let mut leases = LeaseIndex::default();
    leases.attach(b"ab", 7);
    leases.attach(b"a", 9);
    let stamp = Stamp {
        current: 9,
        compacted: -1,
        applied: Some(b"log 12".to_vec()),
        first: Some(rev(2, 0)),
        last: Some(rev(9, 0)),
    };
    (stamp, index, leases)
}

fn encoded() -> Vec<u8> {
    let (stamp, index, leases) = sample();
    let mut out = Vec::new();
    let n = encode(&stamp, &index, &leases, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

fn accept(_: &Stamp) -> Result<(), CheckpointError> {
    Ok(())
}

/// `body` with a fresh checksum: corrupt contents that the CRC cannot catch.
fn resealed(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out
}

#[test]
fn decoding_gives_back_what_was_encoded() {
    let (stamp, index, leases) = sample();
    let (s, i, l) = decode(&encoded(), accept).unwrap();
    assert_eq!(s, stamp);
    assert_eq!(i, index);
    for lease in [7, 9, 1] {
        assert_eq!(l.keys(lease), leases.keys(lease));
    }
    assert_eq!(i.get(b"ab", 3), Some(rev(3, 0)));
    assert_eq!(i.live(b"b").unwrap().created, 7);
    assert_eq!(i.live(b"c"), None);
}

#[test]
fn every_truncation_is_refused() {
    let raw = encoded();
    for len in 0..raw.len() {
        assert!(
            matches!(
                decode(&raw[..len], accept),
                Err(CheckpointError::Corrupt(_))
            ),
            "accepted {len} of {} bytes",
            raw.len()
        );
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let raw = encoded();
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x10;
        assert!(
            matches!(decode(&bad, accept), Err(CheckpointError::Corrupt(_))),
            "accepted a flip at byte {i}"
        );
    }
}

#[test]
fn keys_out_of_order_are_refused_despite_a_good_checksum() {
    let raw = encoded();
    let body = &raw[..raw.len() - 4];
    // The second key "ab" shares 1 byte with "a"; make it share none and
    // spell "b": equal to the third key's... order breaks either way.
    let at = body
        .windows(3)
        .position(|w| w == [1, 1, b'b'])
        .expect("the entry of \"ab\"");
    let mut bad = body.to_vec();
    bad[at] = 0;
    bad[at + 2] = b'0';
    assert!(matches!(
        decode(&resealed(&bad), accept),
        Err(CheckpointError::Corrupt("key order"))
    ));
}

#[test]
fn the_stamp_check_sees_the_stamp_before_any_key() {
    let refused = decode(&encoded(), |s| {
        assert_eq!(s.current, 9);
        Err(CheckpointError::Stale("current revision"))
    });
    assert!(matches!(refused, Err(CheckpointError::Stale(_))));
}

fn store() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    (dir, db)
}

fn write(mvcc: &Mvcc, f: impl FnOnce(&mut WriteTxn<'_>)) {
    let mut txn = mvcc.write();
    txn.begin();
    f(&mut txn);
    txn.end();
    txn.set_meta(APPLIED, &txn.rev().to_be_bytes());
    txn.commit().unwrap();
}

#[test]
fn a_checkpoint_is_used_once_then_gone() {
    let (dir, db) = store();
    let path = dir.path().join("ckpt");
    let mvcc = Mvcc::open(db.open_tree("s").unwrap()).unwrap();
    write(&mvcc, |t| {
        t.put(b"k", b"v".to_vec(), 0);
    });
    let w = mvcc.write_checkpoint(&path, APPLIED).unwrap();
    assert_eq!(w.keys, 1);
    assert_eq!(w.bytes, std::fs::metadata(&path).unwrap().len());
    drop(mvcc);
    let (mvcc, unused) =
        Mvcc::open_with_checkpoint(db.open_tree("s").unwrap(), &path, APPLIED).unwrap();
    assert!(unused.is_none(), "{unused:?}");
    assert!(!path.exists());
    assert_eq!(mvcc.read().get_at(b"k", 2).unwrap().value, b"v");
    drop(mvcc);
    let (_, unused) =
        Mvcc::open_with_checkpoint(db.open_tree("s").unwrap(), &path, APPLIED).unwrap();
    assert!(matches!(unused, Some(CheckpointError::Missing)));
}

#[test]
fn a_checkpoint_of_an_older_state_is_refused() {
    let (dir, db) = store();
    let path = dir.path().join("ckpt");
    let mvcc = Mvcc::open(db.open_tree("s").unwrap()).unwrap();
    write(&mvcc, |t| {
        t.put(b"k", b"v".to_vec(), 0);
    });
    mvcc.write_checkpoint(&path, APPLIED).unwrap();
    // Applied after the checkpoint (as before a crash that skipped the
    // graceful stop's checkpoint).
    write(&mvcc, |t| {
        t.put(b"k", b"w".to_vec(), 0);
    });
    drop(mvcc);
    let (mvcc, unused) =
        Mvcc::open_with_checkpoint(db.open_tree("s").unwrap(), &path, APPLIED).unwrap();
    assert!(
        matches!(unused, Some(CheckpointError::Stale(_))),
        "{unused:?}"
    );
    assert!(!path.exists());
    assert_eq!(mvcc.read().get_at(b"k", 3).unwrap().value, b"w");
}

#[test]
fn a_checkpoint_is_refused_when_only_the_applied_record_moved() {
    let (dir, db) = store();
    let path = dir.path().join("ckpt");
    let tree = db.open_tree("s").unwrap();
    let mvcc = Mvcc::open(tree.clone()).unwrap();
    write(&mvcc, |t| {
        t.put(b"k", b"v".to_vec(), 0);
    });
    mvcc.write_checkpoint(&path, APPLIED).unwrap();
    tree.insert(meta_key(APPLIED), &b"later"[..]).unwrap();
    drop(mvcc);
    let (_, unused) = Mvcc::open_with_checkpoint(tree, &path, APPLIED).unwrap();
    assert!(matches!(
        unused,
        Some(CheckpointError::Stale("last applied entry"))
    ));
}

#[test]
fn a_torn_file_on_disk_falls_back_to_the_rebuild() {
    let (dir, db) = store();
    let path = dir.path().join("ckpt");
    let mvcc = Mvcc::open(db.open_tree("s").unwrap()).unwrap();
    for i in 0..50 {
        write(&mvcc, |t| {
            t.put(format!("k{i}").as_bytes(), b"v".to_vec(), 0);
        });
    }
    mvcc.write_checkpoint(&path, APPLIED).unwrap();
    drop(mvcc);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (mvcc, unused) =
        Mvcc::open_with_checkpoint(db.open_tree("s").unwrap(), &path, APPLIED).unwrap();
    assert!(
        matches!(unused, Some(CheckpointError::Corrupt(_))),
        "{unused:?}"
    );
    assert_eq!(mvcc.key_count(), 50);
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, i64),
    Delete(u8, u8),
    Compact(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..40, 0i64..3).prop_map(|(k, l)| Op::Put(k, l)),
        1 => (0u8..40, 0u8..6).prop_map(|(k, n)| Op::Delete(k, n)),
        1 => (0u8..100).prop_map(Op::Compact),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key/{k:03}").into_bytes()
}

/// Everything a reader can ask, at every readable revision.
fn answers(mvcc: &Mvcc) -> Vec<String> {
    let view = mvcc.read();
    let mut out = vec![format!("rev {} compacted {}", view.rev(), view.compacted())];
    for at in view.compacted().max(1)..=view.rev() {
        let opts = RangeOptions {
            rev: at,
            ..Default::default()
        };
        let r = view.range(KeyRange::new(b"\0", b"\0"), opts).unwrap();
        out.push(format!("{at}: {:?}", r.kvs));
    }
    drop(view);
    for lease in 0..3 {
        out.push(format!("lease {lease}: {:?}", mvcc.lease_keys(lease)));
    }
    out.push(format!("keys {}", mvcc.key_count()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_store_opened_from_its_checkpoint_answers_as_a_rebuilt_one(
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let (dir, db) = store();
        let path = dir.path().join("ckpt");
        let tree = db.open_tree("s").unwrap();
        let mvcc = Mvcc::open(tree.clone()).unwrap();
        for op in ops {
            match op {
                Op::Put(k, lease) => write(&mvcc, |t| {
                    t.put(&key(k), vec![k], lease);
                }),
                Op::Delete(k, n) => write(&mvcc, |t| {
                    t.delete_range(KeyRange::new(&key(k), &key(k.saturating_add(n))));
                }),
                Op::Compact(p) => {
                    let at = mvcc.compacted_revision().max(1)
                        + i64::from(p) * (mvcc.current_revision() - mvcc.compacted_revision().max(1)) / 100;
                    if at > mvcc.compacted_revision() {
                        write(&mvcc, |t| t.compact(at).unwrap());
                    }
                }
            }
        }
        // The key count depends on compactions being finished.
        mvcc.wait_reclaimed();
        let before = answers(&mvcc);
        mvcc.write_checkpoint(&path, APPLIED).unwrap();
        drop(mvcc);
        let (loaded, unused) = Mvcc::open_with_checkpoint(tree.clone(), &path, APPLIED).unwrap();
        prop_assert!(unused.is_none(), "{:?}", unused);
        let rebuilt = Mvcc::open(tree).unwrap();
        prop_assert_eq!(&answers(&loaded), &before);
        prop_assert_eq!(&answers(&rebuilt), &before);
        let (a, b) = (loaded.state.read(), rebuilt.state.read());
        prop_assert_eq!(&a.index, &b.index);
    }
}
