//! Reads a bbolt file: picks the valid meta page, walks bucket trees in key
//! order. Every offset, length and page id is checked before use, every
//! page may be visited once per walk and trees may be only so deep, so
//! damaged or hostile bytes give an error, never a panic or a loop.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::page::*;
use super::BoltError;

/// Deeper trees than this only come from damaged files (a tree of 4 KiB
/// pages this deep would hold more keys than any disk).
const MAX_DEPTH: usize = 32;

/// Random-access bytes of a file.
pub trait Source {
    /// The number of bytes.
    fn size(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// A file, read with positioned reads (no mmap, no whole-file buffer).
pub struct FileSource {
    file: File,
    len: u64,
}

impl Source for FileSource {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

impl Source for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// An open bbolt file.
pub struct DbReader<S: Source> {
    src: S,
    meta: Meta,
}

impl DbReader<FileSource> {
    /// Opens the file at `path`. Bytes after the database (etcd's sha256
    /// trailer on a snapshot) are ignored.
    pub fn open(path: &Path) -> Result<Self, BoltError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        DbReader::new(FileSource { file, len })
    }
}

impl<S: Source> DbReader<S> {
    /// Reads the meta pages of `src` and keeps the valid one with the
    /// higher transaction id, as bbolt does.
    pub fn new(src: S) -> Result<Self, BoltError> {
        let first = read_meta(&src, 0);
        // The second meta page sits one page in; a broken first meta
        // cannot say how big a page is, and then bbolt assumes the OS's.
        let page_size = first
            .as_ref()
            .map_or(PAGE_SIZE as u64, |m| m.page_size.into());
        let second = read_meta(&src, page_size);
        let meta = match (first, second) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(e), Err(_)) => return Err(e),
        };
        let ps = u64::from(meta.page_size);
        if !(512..=65536).contains(&ps) || !ps.is_power_of_two() {
            return Err(BoltError::Corrupt("page size out of range"));
        }
        if meta.high_water < 3 || meta.high_water.saturating_mul(ps) > src.size() {
            return Err(BoltError::Corrupt(
                "high-water mark beyond the end of the file",
            ));
        }
        if meta.root < 2 || meta.root >= meta.high_water {
            return Err(BoltError::Corrupt("root page out of range"));
        }
        Ok(DbReader { src, meta })
    }

    /// The meta record in use.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The database's size in bytes: the high-water mark times the page size.
    pub fn size(&self) -> u64 {
        self.meta.high_water * u64::from(self.meta.page_size)
    }

    /// The names of the top-level buckets, in order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>, BoltError> {
        let mut names = Vec::new();
        let mut walk = Walk::new(self);
        walk.tree(Tree::Page(self.meta.root), 0, &mut |k, flags, _| {
            if flags & BUCKET_LEAF_FLAG != 0 {
                names.push(k.to_vec());
            }
            Ok::<_, BoltError>(())
        })?;
        Ok(names)
    }

    /// Calls `f` with every key of top-level bucket `bucket` in order, with
    /// its value, or `None` for a nested bucket (as bbolt's `ForEach`).
    /// Returns whether the bucket exists.
    pub fn for_each<E: From<BoltError>>(
        &self,
        bucket: &[u8],
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<bool, E> {
        let mut walk = Walk::new(self);
        let mut found = None;
        walk.tree(Tree::Page(self.meta.root), 0, &mut |k, flags, v| {
            if k == bucket && flags & BUCKET_LEAF_FLAG != 0 {
                found = Some(v.to_vec());
            }
            Ok::<_, BoltError>(())
        })?;
        let Some(header) = found else {
            return Ok(false);
        };
        let tree = Tree::of_bucket(&header)?;
        walk.tree(tree, 0, &mut |k, flags, v| {
            f(k, (flags & BUCKET_LEAF_FLAG == 0).then_some(v))
        })?;
        Ok(true)
    }

    /// bbolt's consistency check: every page below the high-water mark is
    /// a meta page, reachable from the root exactly once, or free.
    pub fn check(&self) -> Result<(), BoltError> {
        let mut walk = Walk::new(self);
        walk.nested(Tree::Page(self.meta.root), 0)?;
        if self.meta.freelist == NO_FREELIST {
            // No stored freelist: readers take every unreachable page as free.
            return Ok(());
        }
        let page = walk.page(self.meta.freelist)?;
        let header = PageHeader::decode(&page)?;
        if header.flags & FLAG_FREELIST == 0 {
            return Err(BoltError::Corrupt("freelist page has the wrong type"));
        }
        let (count, start) = if header.count == FREELIST_COUNT_OVERFLOW {
            let raw = page
                .get(PAGE_HEADER..PAGE_HEADER + 8)
                .ok_or(BoltError::Corrupt("freelist count beyond its page"))?;
            (le_u64(raw, 0), PAGE_HEADER + 8)
        } else {
            (u64::from(header.count), PAGE_HEADER)
        };
        let ids = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| page.get(start..start.checked_add(n)?))
            .ok_or(BoltError::Corrupt("freelist beyond its page"))?;
        for id in ids.chunks_exact(8).map(|c| le_u64(c, 0)) {
            if id < 2 || id >= self.meta.high_water || !walk.mark(id) {
                return Err(BoltError::Corrupt("freelist names a page in use"));
            }
        }
        match (2..self.meta.high_water).find(|id| !walk.seen(*id)) {
            Some(id) => Err(BoltError::Unreachable(id)),
            None => Ok(()),
        }
    }
}

fn read_meta(src: &impl Source, offset: u64) -> Result<Meta, BoltError> {
    let mut buf = [0u8; PAGE_HEADER + 64];
    src.read_at(offset, &mut buf)
        .map_err(|_| BoltError::Corrupt("file too short for its meta pages"))?;
    Meta::decode(&buf[PAGE_HEADER..])
}

/// Where a bucket's tree is.
enum Tree<'a> {
    Page(u64),
    /// A small bucket's single leaf page, stored inside its value.
    Inline(&'a [u8]),
}

impl<'a> Tree<'a> {
    fn of_bucket(value: &'a [u8]) -> Result<Self, BoltError> {
        if value.len() < BUCKET_HEADER {
            return Err(BoltError::Corrupt("bucket value shorter than its header"));
        }
        match le_u64(value, 0) {
            0 => Ok(Tree::Inline(&value[BUCKET_HEADER..])),
            root => Ok(Tree::Page(root)),
        }
    }
}

/// Receives a tree's elements: (key, element flags, value).
type Visit<'f, E> = dyn FnMut(&[u8], u32, &[u8]) -> Result<(), E> + 'f;

/// One walk over trees: which pages it has visited.
struct Walk<'r, S: Source> {
    reader: &'r DbReader<S>,
    visited: Vec<u64>,
}

impl<'r, S: Source> Walk<'r, S> {
    fn new(reader: &'r DbReader<S>) -> Self {
        let words = reader.meta.high_water.div_ceil(64) as usize;
        Walk {
            reader,
            visited: vec![0; words],
        }
    }

    /// Marks page `id` visited; false if it was already.
    fn mark(&mut self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        let fresh = self.visited[word] & bit == 0;
        self.visited[word] |= bit;
        fresh
    }

    fn seen(&self, id: u64) -> bool {
        self.visited[(id / 64) as usize] & (1u64 << (id % 64)) != 0
    }

    /// Reads page `id` with its overflow pages, each visited only once.
    fn page(&mut self, id: u64) -> Result<Vec<u8>, BoltError> {
        let meta = self.reader.meta;
        let ps = u64::from(meta.page_size);
        if id < 2 || id >= meta.high_water {
            return Err(BoltError::Corrupt("page id beyond the high-water mark"));
        }
        let mut head = [0u8; PAGE_HEADER];
        self.reader.src.read_at(id * ps, &mut head)?;
        let header = PageHeader::decode(&head)?;
        let span = u64::from(header.overflow) + 1;
        if id + span > meta.high_water {
            return Err(BoltError::Corrupt("page overflows the high-water mark"));
        }
        for p in id..id + span {
            if !self.mark(p) {
                return Err(BoltError::Corrupt("page referenced twice"));
            }
        }
        let mut page = vec![0u8; (span * ps) as usize];
        self.reader.src.read_at(id * ps, &mut page)?;
        Ok(page)
    }

    /// Visits the elements of `tree` in key order: (key, flags, value).
    fn tree<E: From<BoltError>>(
        &mut self,
        tree: Tree<'_>,
        depth: usize,
        f: &mut Visit<'_, E>,
    ) -> Result<(), E> {
        let mut last = None;
        self.node(tree, depth, &mut last, f)
    }

    fn node<E: From<BoltError>>(
        &mut self,
        tree: Tree<'_>,
        depth: usize,
        last: &mut Option<Vec<u8>>,
        f: &mut Visit<'_, E>,
    ) -> Result<(), E> {
        if depth > MAX_DEPTH {
            return Err(BoltError::Corrupt("tree too deep").into());
        }
        let owned;
        let page = match tree {
            Tree::Page(id) => {
                owned = self.page(id)?;
                &owned[..]
            }
            Tree::Inline(page) => page,
        };
        let header = PageHeader::decode(page)?;
        let inline = matches!(tree, Tree::Inline(_));
        if header.flags & FLAG_BRANCH != 0 && !inline {
            for i in 0..usize::from(header.count) {
                let e = BranchElement::decode(page, i)?;
                element_data(page, i, e.pos, e.ksize.into())?;
                self.node(Tree::Page(e.pgid), depth + 1, last, f)?;
            }
            Ok(())
        } else if header.flags & FLAG_LEAF != 0 {
            for i in 0..usize::from(header.count) {
                let e = LeafElement::decode(page, i)?;
                let kv = element_data(page, i, e.pos, u64::from(e.ksize) + u64::from(e.vsize))?;
                let (k, v) = kv.split_at(e.ksize as usize);
                if last.as_deref().is_some_and(|last| k <= last) {
                    return Err(BoltError::Corrupt("keys out of order").into());
                }
                *last = Some(k.to_vec());
                f(k, e.flags, v)?;
            }
            Ok(())
        } else {
            Err(BoltError::Corrupt("page is neither a branch nor a leaf").into())
        }
    }

    /// Visits `tree` and every bucket nested in it, marking their pages.
    fn nested(&mut self, tree: Tree<'_>, depth: usize) -> Result<(), BoltError> {
        let mut buckets = Vec::new();
        self.tree(tree, depth, &mut |_, flags, v| {
            if flags & BUCKET_LEAF_FLAG != 0 {
                buckets.push(v.to_vec());
            }
            Ok::<_, BoltError>(())
        })?;
        for value in buckets {
            self.nested(Tree::of_bucket(&value)?, depth + 1)?;
        }
        Ok(())
    }
}
