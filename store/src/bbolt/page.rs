//! bbolt's on-disk records: the page header, the meta page, leaf and branch
//! elements and the bucket header. All little-endian, as bbolt writes them
//! on the architectures etcd runs on.

use super::BoltError;

/// The page size of every file we write (bbolt's default on Linux x86-64).
pub const PAGE_SIZE: usize = 4096;
/// `id u64, flags u16, count u16, overflow u32`.
pub const PAGE_HEADER: usize = 16;
/// Leaf elements (`flags, pos, ksize, vsize`, each u32) and branch elements
/// (`pos u32, ksize u32, pgid u64`) are both 16 bytes.
pub const ELEMENT: usize = 16;
/// `root pgid u64, sequence u64`, at the start of a bucket's value.
pub const BUCKET_HEADER: usize = 16;

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;

pub const FLAG_BRANCH: u16 = 0x01;
pub const FLAG_LEAF: u16 = 0x02;
pub const FLAG_META: u16 = 0x04;
pub const FLAG_FREELIST: u16 = 0x10;
/// Set on a leaf element whose value is a nested bucket.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;

/// What a meta page says when the freelist is not stored in the file
/// (etcd's `NoFreelistSync`): readers rebuild it.
pub const NO_FREELIST: u64 = u64::MAX;
/// A freelist with this many entries or more keeps its true count in the
/// first u64 of its data.
pub const FREELIST_COUNT_OVERFLOW: u16 = 0xFFFF;

/// Bytes of the meta record, checksum included.
const META_LEN: usize = 64;
/// The checksum covers the meta record up to the checksum itself.
const META_CHECKED: usize = META_LEN - 8;

/// bbolt's largest key and value.
pub const MAX_KEY: usize = 32768;
pub const MAX_VALUE: usize = (1 << 31) - 2;

/// A page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    /// Pages after this one that it spills into.
    pub overflow: u32,
}

impl PageHeader {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Result<Self, BoltError> {
        if b.len() < PAGE_HEADER {
            return Err(BoltError::Corrupt("page shorter than its header"));
        }
        Ok(PageHeader {
            id: le_u64(b, 0),
            flags: u16::from_le_bytes([b[8], b[9]]),
            count: u16::from_le_bytes([b[10], b[11]]),
            overflow: le_u32(b, 12),
        })
    }
}

/// The meta record: where the tree and the freelist are, and how big the
/// file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// The root bucket's root page.
    pub root: u64,
    pub root_sequence: u64,
    /// The freelist's page, or [`NO_FREELIST`].
    pub freelist: u64,
    /// The high-water mark: the first page id not in use.
    pub high_water: u64,
    pub txid: u64,
}

impl Meta {
    /// The meta record with its checksum, as it sits after the page header.
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.root.to_le_bytes());
        b[24..32].copy_from_slice(&self.root_sequence.to_le_bytes());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.high_water.to_le_bytes());
        b[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&b[..META_CHECKED]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes and validates a meta record (magic, version, checksum), as
    /// bbolt does before trusting one of the two meta pages.
    pub fn decode(b: &[u8]) -> Result<Self, BoltError> {
        if b.len() < META_LEN {
            return Err(BoltError::Corrupt("meta page too short"));
        }
        if le_u32(b, 0) != MAGIC {
            return Err(BoltError::Corrupt("not a bbolt file (bad magic)"));
        }
        if le_u32(b, 4) != VERSION {
            return Err(BoltError::Corrupt("unsupported bbolt version"));
        }
        if le_u64(b, 56) != fnv1a64(&b[..META_CHECKED]) {
            return Err(BoltError::Corrupt("meta checksum mismatch"));
        }
        Ok(Meta {
            page_size: le_u32(b, 8),
            flags: le_u32(b, 12),
            root: le_u64(b, 16),
            root_sequence: le_u64(b, 24),
            freelist: le_u64(b, 32),
            high_water: le_u64(b, 40),
            txid: le_u64(b, 48),
        })
    }
}

/// One element of a leaf page.
#[derive(Clone, Copy, Debug)]
pub struct LeafElement {
    pub flags: u32,
    pub pos: u32,
    pub ksize: u32,
    pub vsize: u32,
}

/// One element of a branch page.
#[derive(Clone, Copy, Debug)]
pub struct BranchElement {
    pub pos: u32,
    pub ksize: u32,
    pub pgid: u64,
}

impl LeafElement {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.flags.to_le_bytes());
        out[4..8].copy_from_slice(&self.pos.to_le_bytes());
        out[8..12].copy_from_slice(&self.ksize.to_le_bytes());
        out[12..16].copy_from_slice(&self.vsize.to_le_bytes());
    }

    /// Reads element `i` of a page held in `page`, bounds checked.
    pub fn decode(page: &[u8], i: usize) -> Result<Self, BoltError> {
        let b = element(page, i)?;
        Ok(LeafElement {
            flags: le_u32(b, 0),
            pos: le_u32(b, 4),
            ksize: le_u32(b, 8),
            vsize: le_u32(b, 12),
        })
    }
}

impl BranchElement {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.pos.to_le_bytes());
        out[4..8].copy_from_slice(&self.ksize.to_le_bytes());
        out[8..16].copy_from_slice(&self.pgid.to_le_bytes());
    }

    pub fn decode(page: &[u8], i: usize) -> Result<Self, BoltError> {
        let b = element(page, i)?;
        Ok(BranchElement {
            pos: le_u32(b, 0),
            ksize: le_u32(b, 4),
            pgid: le_u64(b, 8),
        })
    }
}

/// The bytes of element `i`; positions inside elements are relative to
/// the element's own start.
fn element(page: &[u8], i: usize) -> Result<&[u8], BoltError> {
    let start = PAGE_HEADER + i * ELEMENT;
    page.get(start..start + ELEMENT)
        .ok_or(BoltError::Corrupt("element beyond its page"))
}

/// `len` bytes at `pos` after the start of element `i`, bounds checked.
pub fn element_data(page: &[u8], i: usize, pos: u32, len: u64) -> Result<&[u8], BoltError> {
    let start = (PAGE_HEADER + i * ELEMENT) as u64 + u64::from(pos);
    let end = start + len;
    if end > page.len() as u64 {
        return Err(BoltError::Corrupt("element data beyond its page"));
    }
    Ok(&page[start as usize..end as usize])
}

/// FNV-1a, 64 bits: bbolt's meta checksum.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_meta_record_round_trips_and_a_flipped_bit_is_refused() {
        let meta = Meta {
            page_size: 4096,
            flags: 0,
            root: 3,
            root_sequence: 0,
            freelist: 2,
            high_water: 4,
            txid: 1,
        };
        let mut b = meta.encode();
        assert_eq!(Meta::decode(&b).unwrap(), meta);
        b[17] ^= 1;
        assert!(Meta::decode(&b).is_err());
    }
}
