//! The raft log's entries in append-only segment files: an append is one
//! `write`, and one `fdatasync` covers every append that queued up while the
//! previous one ran (etcd's WAL does the same). Reads use positional reads
//! into the files, found through an in-memory index.
//!
//! A record is `[index u64][len u32][crc32 u32][payload]` (big-endian), the
//! payload the bincode of the entry and the CRC over the payload. A segment
//! is named after the first index it holds. At open, every segment is read
//! through; a torn or corrupt tail (a crash mid-write) is cut off, which
//! only ever loses appends that were never acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HEADER: usize = 16;
/// A new segment is started once the current one exceeds this.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Larger records can only come from corruption.
const MAX_RECORD: u32 = 1 << 30;

/// Where one entry lives.
#[derive(Clone, Copy, Debug)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
}

struct Segment {
    first: u64,
    file: Arc<File>,
    size: u64,
}

/// The segment files and the index of the entries they hold.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    /// Segments by first index, oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    index: BTreeMap<u64, Loc>,
}

/// A handle to fsync what was written so far, usable without the lock.
pub struct SyncHandle(Arc<File>);

impl SyncHandle {
    pub fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens the segments in `dir` (creating it), dropping a torn tail and
    /// every entry at or below `purged`.
    pub fn open(dir: &Path, purged: Option<u64>) -> io::Result<Self> {
        Wal::open_with(dir, purged, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, purged: Option<u64>, segment_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: VecDeque::new(),
            index: BTreeMap::new(),
        };
        let mut torn = false;
        for first in firsts {
            let path = dir.join(segment_name(first));
            if torn {
                // Nothing after a torn record can have been acknowledged.
                fs::remove_file(&path)?;
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let (size, clean) = wal.scan(first, &file)?;
            if !clean {
                file.set_len(size)?;
                file.sync_all()?;
                torn = true;
            }
            wal.segments.push_back(Segment {
                first,
                file: Arc::new(file),
                size,
            });
        }
        if let Some(p) = purged {
            wal.index = wal.index.split_off(&(p + 1));
        }
        Ok(wal)
    }

    /// Indexes the records of one segment; returns the length of its valid
    /// prefix and whether the whole file was valid.
    fn scan(&mut self, segment: u64, file: &File) -> io::Result<(u64, bool)> {
        let len = file.metadata()?.len();
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        let mut header = [0u8; HEADER];
        let mut payload = Vec::new();
        while offset < len {
            if len - offset < HEADER as u64 || reader.read_exact(&mut header).is_err() {
                return Ok((offset, false));
            }
            let index = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
            let size = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
            let crc = u32::from_be_bytes(header[12..].try_into().expect("4 bytes"));
            if size > MAX_RECORD || len - offset - (HEADER as u64) < size as u64 {
                return Ok((offset, false));
            }
            payload.resize(size as usize, 0);
            if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
                return Ok((offset, false));
            }
            // A rewritten index (after a truncate) replaces the older one.
            self.index.split_off(&index);
            self.index.insert(
                index,
                Loc {
                    segment,
                    offset: offset + HEADER as u64,
                    len: size,
                },
            );
            offset += (HEADER + size as usize) as u64;
        }
        Ok((offset, true))
    }

    /// The highest index held.
    pub fn last_index(&self) -> Option<u64> {
        self.index.keys().next_back().copied()
    }

    /// Appends encoded entries `(index, payload)` with one write; the caller
    /// syncs through [`Wal::sync_handle`] before acknowledging them.
    pub fn append(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let Some(&(first_index, _)) = records.first() else {
            return Ok(());
        };
        let needs_segment = self
            .segments
            .back()
            .is_none_or(|s| s.size >= self.segment_bytes);
        if needs_segment {
            if let Some(old) = self.segments.back() {
                old.file.sync_data()?;
            }
            let path = self.dir.join(segment_name(first_index));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            sync_dir(&self.dir)?;
            self.segments.push_back(Segment {
                first: first_index,
                file: Arc::new(file),
                size: 0,
            });
        }
        let seg = self.segments.back_mut().expect("a segment exists");
        let mut buf = Vec::with_capacity(records.iter().map(|(_, p)| p.len() + HEADER).sum());
        let mut locs = Vec::with_capacity(records.len());
        for (index, payload) in records {
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "entry too large"))?;
            locs.push((
                *index,
                Loc {
                    segment: seg.first,
                    offset: seg.size + (buf.len() + HEADER) as u64,
                    len,
                },
            ));
            buf.extend_from_slice(&index.to_be_bytes());
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
            buf.extend_from_slice(payload);
        }
        seg.file.write_all_at(&buf, seg.size)?;
        seg.size += buf.len() as u64;
        for (index, loc) in locs {
            self.index.split_off(&index);
            self.index.insert(index, loc);
        }
        Ok(())
    }

    /// A handle that fsyncs the segment being appended to.
    pub fn sync_handle(&self) -> Option<SyncHandle> {
        self.segments.back().map(|s| SyncHandle(s.file.clone()))
    }

    /// Reads the payloads of the entries with indexes in `from..to`.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Vec<Vec<u8>>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (_, loc) in self.index.range(from..to) {
            let seg = self
                .segments
                .iter()
                .find(|s| s.first == loc.segment)
                .ok_or_else(|| io::Error::other("log segment missing"))?;
            let mut buf = vec![0u8; loc.len as usize];
            seg.file.read_exact_at(&mut buf, loc.offset)?;
            out.push(buf);
        }
        Ok(out)
    }

    /// Drops the entries from `index` on (conflicting entries a new leader
    /// overwrites), on disk too, and syncs.
    pub fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some((_, loc)) = self.index.range(index..).next().map(|(i, l)| (*i, *l)) else {
            return Ok(());
        };
        self.index.split_off(&index);
        while self.segments.back().is_some_and(|s| s.first > loc.segment) {
            let seg = self.segments.pop_back().expect("checked");
            fs::remove_file(self.dir.join(segment_name(seg.first)))?;
        }
        if let Some(seg) = self.segments.back_mut() {
            seg.size = loc.offset - HEADER as u64;
            seg.file.set_len(seg.size)?;
            seg.file.sync_all()?;
        }
        sync_dir(&self.dir)
    }

    /// Forgets the entries up to and including `index` and deletes the
    /// segments that hold nothing newer.
    pub fn purge(&mut self, index: u64) -> io::Result<()> {
        self.index = self.index.split_off(&(index + 1));
        let mut removed = false;
        // A segment can go once the next one starts at or below index + 1.
        while self.segments.len() > 1 && self.segments[1].first <= index + 1 {
            let seg = self.segments.pop_front().expect("checked");
            fs::remove_file(self.dir.join(segment_name(seg.first)))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_corrupt_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(1..4)).unwrap();
        drop(wal);
        let path = dir.path().join(segment_name(1));
        let mut raw = fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        fs::write(&path, raw).unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.last_index(), Some(2));
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
}
