//! Checkpoints of the key index: the in-memory [`KeyIndex`] and the lease
//! index beside it, written to a file when the member stops gracefully, so
//! that the next start loads them instead of rebuilding them from a scan
//! of every record on disk (most of a restart's time with many keys).
//!
//! A checkpoint is used only when it provably belongs to the store on
//! disk: it carries a CRC of all its bytes, and the [`Stamp`] of the store
//! it was taken from (current and compacted revision, the caller's record
//! of the last applied log id, the first and last revision record), which
//! must equal the stamp of the tree being opened. Anything else (no file,
//! a torn or corrupt one, one from another state) falls back to the
//! rebuild. The file is deleted once loaded, so a running member never
//! has one on disk: whatever changes the store afterwards (writes, a
//! compaction, an installed snapshot, a defragmentation), a crash cannot
//! leave a stale checkpoint behind to be loaded.
//!
//! Layout: magic, stamp, key count, keys in ascending order (each as the
//! length it shares with the previous key, then the rest) with their
//! history, lease attachments, CRC-32 of everything before it.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::index::{Generation, History, KeyIndex};
use super::leases::LeaseIndex;
use super::revision::REVISION_LEN;
use super::REV_PREFIX;
use super::{meta_key, read_i64, Mvcc, MvccError, Revision, State, META_COMPACTED, META_CURRENT};

impl Mvcc {
    /// Opens the store in `tree`, loading the key index from the
    /// checkpoint at `path` if it was taken of this very state (the
    /// caller's metadata `applied_meta` names the state besides the
    /// revisions), else rebuilding it; says why the checkpoint was not
    /// used. The checkpoint is deleted either way (see this module).
    pub fn open_with_checkpoint(
        tree: sled::Tree,
        path: &Path,
        applied_meta: &str,
    ) -> Result<(Self, Option<CheckpointError>), MvccError> {
        let loaded = read(&tree, path, applied_meta);
        if !matches!(loaded, Err(CheckpointError::Missing)) {
            std::fs::remove_file(path).map_err(|e| {
                MvccError::Storage(format!("removing the key index checkpoint: {e}"))
            })?;
        }
        match loaded {
            Ok((stamp, index, leases)) => {
                let state = State {
                    tree,
                    index,
                    leases,
                    current: stamp.current,
                    compacted: stamp.compacted,
                    epoch: 0,
                    queued: 0,
                };
                Ok((Mvcc::with_state(state), None))
            }
            Err(why) => Ok((Mvcc::open(tree)?, Some(why))),
        }
    }

    /// Writes the key index to `path` for [`Mvcc::open_with_checkpoint`]
    /// (call when nothing writes any more: at a graceful stop). Waits for
    /// compactions under way to finish first.
    pub fn write_checkpoint(
        &self,
        path: &Path,
        applied_meta: &str,
    ) -> Result<Written, CheckpointError> {
        self.reclaimer.wait_idle();
        let state = self.state.read();
        // Jobs are queued by commits, which hold the write lock: none can
        // start while this read lock is held.
        if !self.reclaimer.idle() {
            return Err(CheckpointError::Busy);
        }
        // What the checkpoint is stamped with must be what the disk holds.
        state.tree.flush().map_err(MvccError::from)?;
        write(&state, path, applied_meta)
    }
}

const MAGIC: &[u8; 8] = b"FCDKIX\x00\x01";
/// Encoded bytes gathered before they are checksummed and written.
const CHUNK: usize = 1 << 20;
const TAG_ONE: u8 = 0;
const TAG_GENS: u8 = 1;

/// Why a checkpoint was not used (or could not be written).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("no checkpoint")]
    Missing,
    #[error("checkpoint file: {0}")]
    Io(#[from] io::Error),
    #[error("checkpoint is torn or corrupt: {0}")]
    Corrupt(&'static str),
    #[error("checkpoint is of another state than the store on disk ({0} differs)")]
    Stale(&'static str),
    #[error("a compaction is being finished; the index is not settled")]
    Busy,
    #[error(transparent)]
    Store(#[from] MvccError),
}

/// What identifies the state of a store: equal stamps, equal contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub current: i64,
    pub compacted: i64,
    /// The caller's metadata naming the state (the last applied log id).
    pub applied: Option<Vec<u8>>,
    pub first: Option<Revision>,
    pub last: Option<Revision>,
}

impl Stamp {
    /// The stamp of the store in `tree`, as opening it would see it.
    pub(super) fn of_tree(tree: &sled::Tree, applied_meta: &str) -> Result<Self, MvccError> {
        let rev_of = |item: Option<sled::Result<(sled::IVec, sled::IVec)>>| {
            item.transpose()?
                .map(|(k, _)| Revision::from_bytes(&k[1..]).ok_or_else(|| super::corrupt("key")))
                .transpose()
        };
        let mut revs = tree.scan_prefix([REV_PREFIX]);
        let first = rev_of(revs.next())?;
        let last = rev_of(revs.next_back())?.or(first);
        let current = read_i64(tree, META_CURRENT)?
            .unwrap_or(1)
            .max(last.map_or(1, |r| r.main));
        Ok(Stamp {
            current,
            compacted: read_i64(tree, META_COMPACTED)?.unwrap_or(-1),
            applied: tree.get(meta_key(applied_meta))?.map(|v| v.to_vec()),
            first,
            last,
        })
    }

    fn differs_from(&self, other: &Stamp) -> Option<&'static str> {
        if self.current != other.current {
            Some("current revision")
        } else if self.compacted != other.compacted {
            Some("compacted revision")
        } else if self.applied != other.applied {
            Some("last applied entry")
        } else if self.first != other.first || self.last != other.last {
            Some("revision records")
        } else {
            None
        }
    }
}

/// Size of a written checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub keys: usize,
    pub bytes: u64,
}

/// Writes the index of `state` to `path` atomically (a temporary file,
/// fsynced, renamed over `path`, the directory fsynced). The caller holds
/// `state` still (no writes, no compaction being finished).
pub(super) fn write(
    state: &State,
    path: &Path,
    applied_meta: &str,
) -> Result<Written, CheckpointError> {
    let stamp = Stamp::of_tree(&state.tree, applied_meta)?;
    if stamp.current != state.current || stamp.compacted != state.compacted {
        return Err(CheckpointError::Stale("in-memory revision"));
    }
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        let bytes = encode(&stamp, &state.index, &state.leases, &mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok::<_, io::Error>(bytes)
    })();
    match written {
        Ok(bytes) => Ok(Written {
            keys: state.index.len(),
            bytes,
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// Loads the checkpoint at `path` if it belongs to the store in `tree`.
pub(super) fn read(
    tree: &sled::Tree,
    path: &Path,
    applied_meta: &str,
) -> Result<(Stamp, KeyIndex, LeaseIndex), CheckpointError> {
    let _ = fs::remove_file(path.with_extension("tmp"));
    let raw = match fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CheckpointError::Missing),
        Err(e) => return Err(e.into()),
    };
    let on_disk = Stamp::of_tree(tree, applied_meta)?;
    let (stamp, index, leases) = decode(&raw, |stamp| match stamp.differs_from(&on_disk) {
        Some(what) => Err(CheckpointError::Stale(what)),
        None => Ok(()),
    })?;
    Ok((stamp, index, leases))
}

/// Encodes a checkpoint into `out`; returns the bytes written.
pub(super) fn encode(
    stamp: &Stamp,
    index: &KeyIndex,
    leases: &LeaseIndex,
    out: &mut impl Write,
) -> io::Result<u64> {
    let mut sink = Sink {
        out,
        buf: Vec::with_capacity(CHUNK + 4096),
        crc: crc32fast::Hasher::new(),
        total: 0,
    };
    let b = &mut sink.buf;
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&stamp.current.to_le_bytes());
    b.extend_from_slice(&stamp.compacted.to_le_bytes());
    match &stamp.applied {
        None => b.push(0),
        Some(v) => {
            b.push(1);
            varint(b, v.len() as u64);
            b.extend_from_slice(v);
        }
    }
    for rev in [stamp.first, stamp.last] {
        match rev {
            None => b.push(0),
            Some(r) => {
                b.push(1);
                b.extend_from_slice(&r.to_bytes());
            }
        }
    }
    varint(b, index.len() as u64);
    let mut prev: &[u8] = &[];
    for (key, history) in index.iter() {
        let shared = prev.iter().zip(key).take_while(|(a, b)| a == b).count();
        let b = &mut sink.buf;
        varint(b, shared as u64);
        varint(b, (key.len() - shared) as u64);
        b.extend_from_slice(&key[shared..]);
        encode_history(b, history);
        prev = key;
        sink.spill(false)?;
    }
    let attached: Vec<(&[u8], i64)> = leases.iter().collect();
    varint(&mut sink.buf, attached.len() as u64);
    for (key, lease) in attached {
        let b = &mut sink.buf;
        varint(b, key.len() as u64);
        b.extend_from_slice(key);
        varint(b, lease as u64);
        sink.spill(false)?;
    }
    sink.spill(true)?;
    let crc = sink.crc.clone().finalize();
    sink.out.write_all(&crc.to_le_bytes())?;
    sink.out.flush()?;
    Ok(sink.total + 4)
}

/// Decodes a checkpoint; `check` sees its stamp before the keys are
/// decoded and may refuse it.
pub(super) fn decode(
    raw: &[u8],
    check: impl FnOnce(&Stamp) -> Result<(), CheckpointError>,
) -> Result<(Stamp, KeyIndex, LeaseIndex), CheckpointError> {
    let body_len = raw
        .len()
        .checked_sub(4)
        .ok_or(CheckpointError::Corrupt("too short"))?;
    let (body, crc) = raw.split_at(body_len);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(CheckpointError::Corrupt("checksum"));
    }
    let mut r = Reader { raw: body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(CheckpointError::Corrupt("not a checkpoint of this version"));
    }
    let current = r.i64_le()?;
    let compacted = r.i64_le()?;
    let applied = match r.byte()? {
        0 => None,
        _ => {
            let n = r.len()?;
            Some(r.take(n)?.to_vec())
        }
    };
    let mut revs = [None, None];
    for rev in &mut revs {
        if r.byte()? != 0 {
            *rev = Some(Revision::from_bytes(r.take(REVISION_LEN)?).ok_or(bad("revision"))?);
        }
    }
    let stamp = Stamp {
        current,
        compacted,
        applied,
        first: revs[0],
        last: revs[1],
    };
    check(&stamp)?;
    let count = r.len()?;
    // Every entry takes at least 4 bytes: a bound on what to reserve.
    let mut entries: Vec<(Box<[u8]>, History)> = Vec::with_capacity(count.min(r.raw.len() / 4));
    let mut key: Vec<u8> = Vec::new();
    for _ in 0..count {
        let shared = r.len()?;
        let rest = r.len()?;
        if shared > key.len() {
            return Err(bad("shared key length"));
        }
        let before = entries.last().map(|(k, _)| &k[..]);
        key.truncate(shared);
        key.extend_from_slice(r.take(rest)?);
        if before.is_some_and(|b| b >= &key[..]) {
            return Err(bad("key order"));
        }
        entries.push((Box::from(&key[..]), decode_history(&mut r)?));
    }
    let index = KeyIndex::from_sorted(entries);
    let mut leases = LeaseIndex::default();
    for _ in 0..r.len()? {
        let n = r.len()?;
        let key = r.take(n)?;
        let lease = r.varint()? as i64;
        if lease == 0 || index.live(key).is_none() {
            return Err(bad("lease attachment"));
        }
        leases.attach(key, lease);
    }
    if !r.raw.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok((stamp, index, leases))
}

fn encode_history(b: &mut Vec<u8>, history: &History) {
    match history {
        History::One(rev) => {
            b.push(TAG_ONE);
            encode_rev(b, *rev);
        }
        History::Gens(gens) => {
            b.push(TAG_GENS);
            varint(b, gens.len() as u64);
            for g in gens.iter() {
                varint(b, g.created as u64);
                varint(b, g.version as u64);
                b.push(u8::from(g.closed));
                varint(b, g.revs.len() as u64);
                for rev in &g.revs {
                    encode_rev(b, *rev);
                }
            }
        }
    }
}

fn decode_history(r: &mut Reader<'_>) -> Result<History, CheckpointError> {
    match r.byte()? {
        TAG_ONE => Ok(History::One(decode_rev(r)?)),
        TAG_GENS => {
            let n = r.len()?;
            if n == 0 {
                return Err(bad("empty history"));
            }
            let mut gens = Vec::with_capacity(n.min(r.raw.len()));
            for _ in 0..n {
                let created = r.varint()? as i64;
                let version = r.varint()? as i64;
                let closed = match r.byte()? {
                    0 => false,
                    1 => true,
                    _ => return Err(bad("generation state")),
                };
                let m = r.len()?;
                let mut revs = Vec::with_capacity(m.min(r.raw.len()));
                for _ in 0..m {
                    revs.push(decode_rev(r)?);
                }
                if revs.is_empty() || !revs.windows(2).all(|w| w[0] < w[1]) {
                    return Err(bad("generation revisions"));
                }
                gens.push(Generation {
                    created,
                    version,
                    revs,
                    closed,
                });
            }
            Ok(History::Gens(Box::new(gens)).canonical())
        }
        _ => Err(bad("history tag")),
    }
}

fn encode_rev(b: &mut Vec<u8>, rev: Revision) {
    varint(b, rev.main as u64);
    varint(b, rev.sub as u64);
}

fn decode_rev(r: &mut Reader<'_>) -> Result<Revision, CheckpointError> {
    Ok(Revision::new(r.varint()? as i64, r.varint()? as i64))
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn bad(what: &'static str) -> CheckpointError {
    CheckpointError::Corrupt(what)
}

/// Gathers encoded bytes, checksums and writes them a chunk at a time.
struct Sink<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
}

impl<W: Write> Sink<'_, W> {
    fn spill(&mut self, all: bool) -> io::Result<()> {
        if all || self.buf.len() >= CHUNK {
            self.crc.update(&self.buf);
            self.out.write_all(&self.buf)?;
            self.total += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Reads a checkpoint's body front to back.
struct Reader<'a> {
    raw: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        if n > self.raw.len() {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.raw.split_at(n);
        self.raw = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.take(1)?[0])
    }

    fn i64_le(&mut self) -> Result<i64, CheckpointError> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| bad("integer"))?;
        Ok(i64::from_le_bytes(bytes))
    }

    fn varint(&mut self) -> Result<u64, CheckpointError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("varint"))
    }

    /// A length or count: a varint that must fit in what is left.
    fn len(&mut self) -> Result<usize, CheckpointError> {
        usize::try_from(self.varint()?).map_err(|_| bad("length"))
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
