//! The segment log: appends and reads across reopen, truncate and purge,
//! and the open rules (a torn tail is cut, any other damage refused).

use super::*;

fn records(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    range
        .map(|i| (i, format!("entry {i}").into_bytes()))
        .collect()
}

#[test]
fn appended_entries_read_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    wal.append(&records(4..6)).unwrap();
    wal.sync_handle().unwrap().sync().unwrap();
    assert_eq!(
        wal.read(2, 5).unwrap(),
        vec![
            b"entry 2".to_vec(),
            b"entry 3".to_vec(),
            b"entry 4".to_vec()
        ]
    );
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.last_index(), Some(5));
    assert_eq!(wal.read(1, 6).unwrap().len(), 5);
}

#[test]
fn a_limited_read_stops_at_the_entry_that_reaches_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    // Entries of 7 bytes ("entry 1".."entry 9").
    wal.append(&records(1..10)).unwrap();
    assert_eq!(wal.read_limited(1, 10, 14).unwrap().len(), 2);
    assert_eq!(wal.read_limited(1, 10, 15).unwrap().len(), 3);
    // The first entry comes whatever the budget; the range still bounds.
    assert_eq!(
        wal.read_limited(4, 10, 1).unwrap(),
        vec![b"entry 4".to_vec()]
    );
    assert_eq!(wal.read_limited(4, 6, u64::MAX).unwrap().len(), 2);
    assert!(wal.read_limited(6, 6, 100).unwrap().is_empty());
}

#[test]
fn a_torn_tail_is_cut_off_at_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    drop(wal);
    let path = dir.path().join(segment_name(1));
    let len = fs::metadata(&path).unwrap().len();
    // A crash in the middle of the last record's payload.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.last_index(), Some(2));
    // Appending after the cut continues cleanly.
    wal.append(&records(3..5)).unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.read(1, 5).unwrap().len(), 4);
    assert_eq!(wal.read(4, 5).unwrap(), vec![b"entry 4".to_vec()]);
}

/// Flips one byte of segment `first`, `from_end` bytes before its end.
fn flip(dir: &Path, first: u64, from_end: u64) {
    let path = dir.join(segment_name(first));
    let mut raw = fs::read(&path).unwrap();
    let at = raw.len() - from_end as usize;
    raw[at] ^= 0xff;
    fs::write(&path, raw).unwrap();
}

fn corrupt_at(result: Result<Wal, WalError>) -> (PathBuf, u64, Damage) {
    match result {
        Err(WalError::Corrupt {
            path,
            offset,
            damage,
        }) => (path, offset, damage),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a corrupt log was opened"),
    }
}

#[test]
fn a_last_record_failing_its_checksum_with_nothing_after_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    drop(wal);
    flip(dir.path(), 1, 1);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.last_index(), Some(2));
}

#[test]
fn a_corrupt_record_followed_by_valid_ones_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    drop(wal);
    // The last byte of record 2's payload ("entry 2"); record 3 follows.
    let record = (HEADER + "entry 3".len()) as u64;
    flip(dir.path(), 1, record + 1);
    let (path, offset, damage) = corrupt_at(Wal::open(dir.path(), None));
    assert_eq!(path, dir.path().join(segment_name(1)));
    assert_eq!(offset, record);
    assert_eq!(damage, Damage::Checksum);
    // Nothing was cut: the file still holds all three records.
    let len = fs::metadata(dir.path().join(segment_name(1)))
        .unwrap()
        .len();
    assert_eq!(len, 3 * record);
}

#[test]
fn damage_in_an_older_segment_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open_with(dir.path(), None, 100).unwrap();
    let big = vec![7u8; 60];
    for i in 1..=5 {
        wal.append(&[(i, big.clone())]).unwrap();
    }
    drop(wal);
    // The older segment's last record, with nothing after it in its file.
    flip(dir.path(), 1, 1);
    let (path, offset, damage) = corrupt_at(Wal::open_with(dir.path(), None, 100));
    assert_eq!(path, dir.path().join(segment_name(1)));
    assert_eq!((offset, damage), ((HEADER + 60) as u64, Damage::Checksum));
    // No later segment was deleted.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn a_truncated_older_segment_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open_with(dir.path(), None, 100).unwrap();
    for i in 1..=5 {
        wal.append(&[(i, vec![7u8; 60])]).unwrap();
    }
    drop(wal);
    let path = dir.path().join(segment_name(3));
    let len = fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (bad, _, damage) = corrupt_at(Wal::open_with(dir.path(), None, 100));
    assert_eq!((bad, damage), (path, Damage::Incomplete));
}

#[test]
fn zeros_after_the_last_record_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    drop(wal);
    let path = dir.path().join(segment_name(1));
    let len = fs::metadata(&path).unwrap().len();
    // A file extended by a write whose pages never reached the disk.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len + 3 * 4096)
        .unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.last_index(), Some(3));
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    wal.append(&records(4..5)).unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.read(1, 5).unwrap().len(), 4);
}

#[test]
fn a_checksum_failure_followed_by_zeros_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    drop(wal);
    flip(dir.path(), 1, 1);
    let path = dir.path().join(segment_name(1));
    let len = fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len + 100)
        .unwrap();
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.last_index(), Some(2));
}

#[test]
fn a_zeroed_record_followed_by_data_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    drop(wal);
    let path = dir.path().join(segment_name(1));
    let mut raw = fs::read(&path).unwrap();
    let record = HEADER + "entry 1".len();
    raw[record..2 * record].fill(0);
    fs::write(&path, raw).unwrap();
    let (_, offset, damage) = corrupt_at(Wal::open(dir.path(), None));
    assert_eq!((offset, damage), (record as u64, Damage::Length(0)));
}

#[test]
fn damage_wholly_behind_the_purge_point_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open_with(dir.path(), None, 100).unwrap();
    for i in 1..=5 {
        wal.append(&[(i, vec![7u8; 60])]).unwrap();
    }
    drop(wal);
    flip(dir.path(), 1, 1);
    let wal = Wal::open_with(dir.path(), Some(2), 100).unwrap();
    assert_eq!(wal.read(3, 6).unwrap().len(), 3);
}

#[test]
fn truncate_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..10)).unwrap();
    wal.truncate(7).unwrap();
    assert_eq!(wal.last_index(), Some(6));
    wal.append(&[(7, b"new 7".to_vec())]).unwrap();
    wal.purge(3).unwrap();
    assert!(wal.read(1, 4).unwrap().is_empty());
    drop(wal);
    let wal = Wal::open(dir.path(), Some(3)).unwrap();
    assert_eq!(wal.last_index(), Some(7));
    assert_eq!(wal.read(4, 8).unwrap().len(), 4);
    assert_eq!(wal.read(7, 8).unwrap(), vec![b"new 7".to_vec()]);
}

#[test]
fn purge_deletes_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open_with(dir.path(), None, 100).unwrap();
    // Two records per segment.
    let big = vec![7u8; 60];
    for i in 1..=5 {
        wal.append(&[(i, big.clone())]).unwrap();
    }
    let segments = || fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(segments(), 3);
    wal.purge(2).unwrap();
    // Entries 3.. remain readable; the segment holding 1 and 2 is gone.
    assert_eq!(segments(), 2);
    assert_eq!(wal.read(3, 6).unwrap().len(), 3);
    drop(wal);
    let wal = Wal::open_with(dir.path(), Some(2), 100).unwrap();
    assert_eq!(wal.read(1, 6).unwrap().len(), 3);
}

#[test]
fn preallocated_space_left_by_a_crash_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    wal.sync_handle().unwrap().sync().unwrap();
    let path = dir.path().join(segment_name(1));
    let written = (3 * HEADER + 3 * "entry 1".len()) as u64;
    assert_eq!(fs::metadata(&path).unwrap().len(), PREALLOCATE);
    // A crash: no clean close trims the zeros.
    std::mem::forget(wal);
    let mut wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.last_index(), Some(3));
    assert_eq!(fs::metadata(&path).unwrap().len(), written);
    wal.append(&records(4..6)).unwrap();
    drop(wal);
    assert_eq!(fs::metadata(&path).unwrap().len(), written + 2 * 23);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.read(1, 6).unwrap().len(), 5);
}

#[test]
fn close_leaves_no_preallocated_zeros_while_the_log_is_still_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.append(&records(1..4)).unwrap();
    let path = dir.path().join(segment_name(1));
    let written = (3 * HEADER + 3 * "entry 1".len()) as u64;
    assert_eq!(fs::metadata(&path).unwrap().len(), PREALLOCATE);
    wal.close().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), written);
    // Still usable: an append after close grows the file again.
    wal.append(&records(4..5)).unwrap();
    wal.close().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), written + 23);
    // Whoever holds the log last need not drop it: the file is whole.
    std::mem::forget(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.read(1, 5).unwrap().len(), 4);
}

#[test]
fn a_rolled_segment_keeps_no_preallocated_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open_with(dir.path(), None, 100).unwrap();
    let big = vec![7u8; 60];
    for i in 1..=3 {
        wal.append(&[(i, big.clone())]).unwrap();
    }
    // Segments of two records: 1-2 was rolled, 3 is being appended to.
    let len = |first| {
        fs::metadata(dir.path().join(segment_name(first)))
            .unwrap()
            .len()
    };
    assert_eq!(len(1), 2 * (HEADER + 60) as u64);
    assert_eq!(len(3), PREALLOCATE);
    std::mem::forget(wal);
    let wal = Wal::open_with(dir.path(), None, 100).unwrap();
    assert_eq!(wal.read(1, 4).unwrap().len(), 3);
}

mod arbitrary_bytes {
    //! Segment files are read from disk at every start: whatever bytes
    //! they hold, opening either succeeds (and reads then work) or fails
    //! with an error; it never panics.

    use super::*;
    use proptest::prelude::*;

    /// A valid two-segment log, as bytes per segment file.
    fn valid_log() -> Vec<(String, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open_with(dir.path(), None, 256).unwrap();
        wal.append(&records(1..20)).unwrap();
        wal.sync_handle().unwrap().sync().unwrap();
        drop(wal);
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    fn open_and_read(files: &[(String, Vec<u8>)]) {
        let dir = tempfile::tempdir().unwrap();
        for (name, raw) in files {
            fs::write(dir.path().join(name), raw).unwrap();
        }
        if let Ok(wal) = Wal::open_with(dir.path(), None, 256) {
            if let Some(last) = wal.last_index() {
                let _ = wal.read(1, last + 1);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_bytes_in_a_segment_never_panic(
            raw in prop::collection::vec(any::<u8>(), 0..600),
            first in 0u64..5,
        ) {
            open_and_read(&[(segment_name(first), raw)]);
        }

        #[test]
        fn flipped_cut_or_grown_segments_never_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
            cut in any::<prop::sample::Index>(),
            tail in prop::collection::vec(any::<u8>(), 0..40),
            which in any::<prop::sample::Index>(),
        ) {
            let mut files = valid_log();
            let n = files.len();
            let file = &mut files[which.index(n)].1;
            for (at, x) in flips {
                let i = at.index(file.len());
                file[i] ^= x;
            }
            let keep = cut.index(file.len() + 1);
            file.truncate(keep);
            file.extend(tail);
            open_and_read(&files);
        }
    }
}
