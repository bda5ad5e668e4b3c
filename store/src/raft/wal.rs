//! The raft log's entries in append-only segment files: an append is one
//! `write`, and one `fdatasync` covers every append that queued up while the
//! previous one ran (etcd's WAL does the same). Reads use positional reads
//! into the files, found through an in-memory index.
//!
//! A record is `[index u64][len u32][crc32 u32][payload]` (big-endian), the
//! payload the bincode of the entry and the CRC over the payload. A segment
//! is named after the first index it holds. A new segment is started only
//! after the previous one was synced.
//!
//! The segment being appended to grows in preallocated steps
//! ([`PREALLOCATE`], `fallocate`): an `fdatasync` then writes the data
//! without a file size change to journal, a third less time per sync on
//! ext4 here. The zeros past the last record are cut off when the segment
//! is closed, rolled or reopened.
//!
//! At open, every segment is read through. Only a torn tail of the last
//! segment is cut off: what a crash in the middle of an unsynced write
//! leaves, so it holds no acknowledged entry. Any other damage (a record
//! that fails its checksum with more data after it, or anything wrong in
//! an older segment) is refused with [`WalError::Corrupt`], as etcd
//! refuses to start on a corrupt WAL: cutting there could drop committed,
//! acknowledged entries.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, warn};

const HEADER: usize = 16;
/// A new segment is started once the current one exceeds this.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The segment being appended to is allocated ahead in steps of this.
const PREALLOCATE: u64 = 4 << 20;
/// Larger records can only come from corruption.
const MAX_RECORD: u32 = 1 << 30;

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("raft log segment files")]
    Io(#[from] io::Error),
    #[error("raft log segment {} is corrupt at offset {offset}: {damage}; refusing to start, as cutting the log there could lose acknowledged entries", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        damage: Damage,
    },
}

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("the record runs past the end of the file")]
    Incomplete,
    #[error("invalid record length {0}")]
    Length(u32),
    #[error("record checksum mismatch")]
    Checksum,
}

/// The first damaged record of a segment.
#[derive(Debug, Clone, Copy)]
struct Damaged {
    offset: u64,
    damage: Damage,
    /// Where the record ends by its header (within the file).
    end: u64,
}

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
    /// Where the records end.
    size: u64,
    /// The file's length: `size` plus preallocated zeros.
    allocated: u64,
}

/// The segment files and the index of the entries they hold.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    /// Segments by first index, oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    index: BTreeMap<u64, Loc>,
    /// Cleared when the file system cannot preallocate.
    preallocate: bool,
}

/// A handle to fsync what was written so far, usable without the lock.
pub struct SyncHandle(Arc<File>);

impl SyncHandle {
    /// Syncs, timed as etcd times its WAL fsyncs.
    pub fn sync(&self) -> io::Result<()> {
        let start = std::time::Instant::now();
        self.0.sync_data()?;
        crate::metrics::get()
            .wal_fsync
            .observe(start.elapsed().as_secs_f64());
        Ok(())
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the bytes of `file` in `from..to` are all zero.
fn only_zeros(file: &File, mut from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    while from < to {
        let n = buf.len().min((to - from) as usize);
        file.read_exact_at(&mut buf[..n], from)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        from += n as u64;
    }
    Ok(true)
}

impl Wal {
    /// Opens the segments in `dir` (creating it), cutting off a torn tail
    /// of the last segment and dropping every entry at or below `purged`.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<Self, WalError> {
        Wal::open_with(dir, purged, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, purged: Option<u64>, segment_bytes: u64) -> Result<Self, WalError> {
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
            preallocate: true,
        };
        for (i, &first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(first));
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let next = firsts.get(i + 1);
            // A segment wholly behind the purge point holds nothing needed:
            // it is not read, and the next purge deletes it.
            let behind = next.is_some_and(|n| purged.is_some_and(|p| *n <= p + 1));
            let size = if behind {
                file.metadata()?.len()
            } else {
                wal.open_segment(first, &file, &path, next.is_none())?
            };
            wal.segments.push_back(Segment {
                first,
                file: Arc::new(file),
                size,
                allocated: size,
            });
        }
        if let Some(p) = purged {
            wal.index = wal.index.split_off(&(p + 1));
        }
        Ok(wal)
    }

    /// Indexes one segment; returns its size once a torn tail is cut off.
    fn open_segment(
        &mut self,
        first: u64,
        file: &File,
        path: &Path,
        last: bool,
    ) -> Result<u64, WalError> {
        let len = file.metadata()?.len();
        let Some(bad) = self.scan(first, file, len)? else {
            return Ok(len);
        };
        let torn = last
            && match bad.damage {
                Damage::Incomplete => true,
                // Only zeros after it: a write whose pages were not all
                // written, or a file extended but not filled.
                Damage::Length(_) | Damage::Checksum => only_zeros(file, bad.end, len)?,
            };
        if !torn {
            return Err(WalError::Corrupt {
                path: path.to_path_buf(),
                offset: bad.offset,
                damage: bad.damage,
            });
        }
        if bad.damage == Damage::Length(0) {
            // Most likely space preallocated before a crash.
            debug!(
                segment = %path.display(),
                offset = bad.offset,
                cut = len - bad.offset,
                "cutting zeros off the end of the raft log"
            );
        } else {
            warn!(
                segment = %path.display(),
                offset = bad.offset,
                cut = len - bad.offset,
                "cutting a torn tail off the raft log ({})",
                bad.damage
            );
        }
        file.set_len(bad.offset)?;
        file.sync_all()?;
        Ok(bad.offset)
    }

    /// Indexes the records of one segment of `len` bytes, up to the first
    /// damaged one, which it returns.
    fn scan(&mut self, segment: u64, file: &File, len: u64) -> io::Result<Option<Damaged>> {
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        let mut header = [0u8; HEADER];
        let mut payload = Vec::new();
        while offset < len {
            let damaged = |damage, end| {
                Ok(Some(Damaged {
                    offset,
                    damage,
                    end,
                }))
            };
            if len - offset < HEADER as u64 {
                return damaged(Damage::Incomplete, len);
            }
            reader.read_exact(&mut header)?;
            let index = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
            let size = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
            let crc = u32::from_be_bytes(header[12..].try_into().expect("4 bytes"));
            let body = offset + HEADER as u64;
            if len - body < size as u64 {
                return damaged(Damage::Incomplete, len);
            }
            // No entry encodes to nothing: a zero length is a zeroed header.
            if size == 0 || size > MAX_RECORD {
                return damaged(Damage::Length(size), body);
            }
            payload.resize(size as usize, 0);
            reader.read_exact(&mut payload)?;
            if crc32fast::hash(&payload) != crc {
                return damaged(Damage::Checksum, body + size as u64);
            }
            // A rewritten index (after a truncate) replaces the older one.
            self.index.split_off(&index);
            self.index.insert(
                index,
                Loc {
                    segment,
                    offset: body,
                    len: size,
                },
            );
            offset = body + size as u64;
        }
        Ok(None)
    }

    /// The highest index held.
    pub fn last_index(&self) -> Option<u64> {
        self.index.keys().next_back().copied()
    }

    /// Whether the next append starts a new segment (and syncs the last
    /// one first).
    pub fn rolls_next(&self) -> bool {
        self.segments
            .back()
            .is_none_or(|s| s.size >= self.segment_bytes)
    }

    /// Appends encoded entries `(index, payload)` with one write; the caller
    /// syncs through [`Wal::sync_handle`] before acknowledging them.
    pub fn append(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let Some(&(first_index, _)) = records.first() else {
            return Ok(());
        };
        if self.rolls_next() {
            if let Some(old) = self.segments.back_mut() {
                old.trim()?;
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
                allocated: 0,
            });
        }
        let seg = self.segments.back_mut().expect("a segment exists");
        let needed = seg.size + records.iter().map(|(_, p)| p.len() + HEADER).sum::<usize>() as u64;
        if self.preallocate && needed > seg.allocated {
            self.preallocate = seg.preallocate(needed.div_ceil(PREALLOCATE) * PREALLOCATE)?;
        }
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
        seg.allocated = seg.allocated.max(seg.size);
        for (index, loc) in locs {
            self.index.split_off(&index);
            self.index.insert(index, loc);
        }
        Ok(())
    }

    /// Cuts the preallocated zeros off the segment being appended to and
    /// syncs it: what a clean stop leaves. Appends may still follow.
    pub fn close(&mut self) -> io::Result<()> {
        match self.segments.back_mut() {
            Some(seg) => seg.trim().and_then(|()| seg.file.sync_data()),
            None => Ok(()),
        }
    }

    /// A handle that fsyncs the segment being appended to.
    pub fn sync_handle(&self) -> Option<SyncHandle> {
        self.segments.back().map(|s| SyncHandle(s.file.clone()))
    }

    /// Reads the payloads of the entries with indexes in `from..to`.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Vec<Vec<u8>>> {
        self.read_limited(from, to, u64::MAX)
    }

    /// Reads the payloads of the entries with indexes in `from..to`, but
    /// stops after the entry that brings them to `max_bytes` (the first
    /// entry is always read, however large).
    pub fn read_limited(&self, from: u64, to: u64, max_bytes: u64) -> io::Result<Vec<Vec<u8>>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for (_, loc) in self.index.range(from..to) {
            if bytes >= max_bytes {
                break;
            }
            bytes += u64::from(loc.len);
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
            seg.allocated = seg.size;
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

impl Segment {
    /// Allocates the file up to `len` bytes. Returns false where the file
    /// system cannot preallocate at all.
    fn preallocate(&mut self, len: u64) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let Ok(off) = libc::off_t::try_from(len) else {
            return Ok(false);
        };
        // SAFETY: fallocate on an open file descriptor owned by `self.file`;
        // mode 0 only allocates (and extends the size), never touches data.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, off) };
        if rc == 0 {
            self.allocated = len;
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
            // Too little room for a whole step: the write itself decides
            // (it may still fit), as it would without preallocation.
            Some(libc::ENOSPC) => Ok(true),
            _ => Err(err),
        }
    }

    /// Cuts preallocated zeros off the end of the file.
    fn trim(&mut self) -> io::Result<()> {
        if self.allocated > self.size {
            self.file.set_len(self.size)?;
            self.allocated = self.size;
        }
        Ok(())
    }
}

impl Drop for Wal {
    /// A cleanly closed log leaves no preallocated zeros behind.
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests;
