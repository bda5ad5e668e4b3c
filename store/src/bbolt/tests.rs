use std::collections::BTreeMap;
use std::io::Cursor;

use proptest::prelude::*;

use super::page::{Meta, PageHeader, FLAG_META, PAGE_HEADER};
use super::*;

type Buckets = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

fn write(buckets: &Buckets) -> Vec<u8> {
    let mut w = DbWriter::new(Cursor::new(Vec::new())).unwrap();
    for (name, keys) in buckets {
        w.bucket(name).unwrap();
        for (k, v) in keys {
            w.put(k, v).unwrap();
        }
    }
    let (out, size) = w.finish().unwrap();
    let bytes = out.into_inner();
    assert_eq!(bytes.len() as u64, size);
    bytes
}

fn read(bytes: Vec<u8>) -> Result<Buckets, BoltError> {
    let db = DbReader::new(bytes)?;
    db.check()?;
    let mut out = Buckets::new();
    for name in db.buckets()? {
        let mut keys = BTreeMap::new();
        db.for_each(&name, |k, v| {
            keys.insert(k.to_vec(), v.expect("no nested buckets").to_vec());
            Ok::<_, BoltError>(())
        })?;
        out.insert(name, keys);
    }
    Ok(out)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..max)
}

/// Values mostly small, sometimes bigger than a page (overflow pages).
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 1000..10_000),
    ]
}

fn buckets() -> impl Strategy<Value = Buckets> {
    prop::collection::btree_map(
        bytes(20),
        prop::collection::btree_map(bytes(40), value(), 0..300),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn what_is_written_reads_back(model in buckets()) {
        prop_assert_eq!(read(write(&model)).unwrap(), model);
    }

    /// Damaged files give errors, never a panic or a hang.
    #[test]
    fn damaged_bytes_never_panic_the_reader(
        model in buckets(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut file = write(&model);
        for (at, byte) in damage {
            let at = at.index(file.len());
            file[at] = byte;
        }
        if truncate {
            file.truncate(cut.index(file.len()));
        }
        let _ = read(file);
    }

    /// Meta pages with a valid checksum but any field values, pointing at
    /// arbitrary pages: still no panic.
    #[test]
    fn forged_meta_pages_never_panic_the_reader(
        root in 0u64..12, freelist in any::<u64>(), high_water in 0u64..20, txid in any::<u64>(),
        page_size in prop_oneof![Just(4096u32), any::<u32>()],
        pages in prop::collection::vec(any::<u8>(), 0..(10 * 4096)),
    ) {
        let meta = Meta { page_size, flags: 0, root, root_sequence: 0, freelist, high_water, txid };
        let mut file = vec![0u8; 2 * PAGE_SIZE];
        for p in 0..2 {
            let at = p * PAGE_SIZE;
            PageHeader { id: p as u64, flags: FLAG_META, count: 0, overflow: 0 }.encode(&mut file[at..]);
            file[at + PAGE_HEADER..at + PAGE_HEADER + 64].copy_from_slice(&meta.encode());
        }
        file.extend_from_slice(&pages);
        let _ = read(file);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_reader(file in prop::collection::vec(any::<u8>(), 0..20_000)) {
        let _ = read(file);
    }
}

#[test]
fn an_empty_database_has_no_buckets() {
    assert!(read(write(&Buckets::new())).unwrap().is_empty());
}

#[test]
fn a_large_bucket_gets_several_branch_levels() {
    let keys: BTreeMap<_, _> = (0u32..200_000)
        .map(|i| (i.to_be_bytes().to_vec(), vec![7u8; 20]))
        .collect();
    let model = Buckets::from([(b"key".to_vec(), keys)]);
    let file = write(&model);
    // 200k elements of 40 bytes fill ~1950 leaves, under ~10 branches under the root.
    assert!(file.len() > 1900 * PAGE_SIZE);
    assert_eq!(read(file).unwrap(), model);
}

#[test]
fn small_buckets_are_inline_and_large_ones_have_pages() {
    let small = BTreeMap::from([(b"a".to_vec(), b"1".to_vec())]);
    let large: BTreeMap<_, _> = (0u8..50).map(|i| (vec![i], vec![i; 30])).collect();
    let file = write(&Buckets::from([
        (b"large".to_vec(), large),
        (b"small".to_vec(), small),
    ]));
    // Metas, freelist, the root leaf and one leaf of `large`.
    assert_eq!(file.len(), 5 * PAGE_SIZE);
}

#[test]
fn keys_out_of_order_are_refused() {
    let mut w = DbWriter::new(Cursor::new(Vec::new())).unwrap();
    assert!(matches!(w.put(b"a", b""), Err(BoltError::NoBucket)));
    w.bucket(b"m").unwrap();
    w.put(b"b", b"").unwrap();
    assert!(matches!(w.put(b"b", b""), Err(BoltError::OutOfOrder)));
    assert!(matches!(w.put(b"a", b""), Err(BoltError::OutOfOrder)));
    assert!(matches!(w.put(b"", b""), Err(BoltError::EmptyKey)));
    assert!(matches!(w.bucket(b"a"), Err(BoltError::OutOfOrder)));
}

#[test]
fn an_unreachable_page_fails_the_check() {
    let model = Buckets::from([(
        b"k".to_vec(),
        (0u16..1000)
            .map(|i| (i.to_be_bytes().to_vec(), vec![1u8; 50]))
            .collect(),
    )]);
    let mut file = write(&model);
    // Add a page past the tree and raise the high-water mark over it.
    file.extend_from_slice(&[0u8; PAGE_SIZE]);
    let db = DbReader::new(file.clone()).unwrap();
    let mut meta = db.meta();
    meta.high_water += 1;
    for p in 0..2 {
        let at = p * PAGE_SIZE + PAGE_HEADER;
        file[at..at + 64].copy_from_slice(&meta.encode());
    }
    let err = DbReader::new(file).unwrap().check().unwrap_err();
    assert!(matches!(err, BoltError::Unreachable(_)), "{err}");
}
