//! Writes a bbolt file in one pass from sorted input: buckets in name
//! order, keys in order within each. Leaf pages are written as they fill;
//! each full page adds one element to the branch level above it, which is
//! written the same way, so memory holds one pending page per tree level
//! and never the whole file. The meta pages, which point at the finished
//! tree, are written last, at the start of the file.

use std::io::{BufWriter, Seek, SeekFrom, Write};

use super::page::*;
use super::BoltError;

/// A bbolt file being written. Call [`DbWriter::bucket`] to start each
/// bucket (in ascending name order), [`DbWriter::put`] for its keys (in
/// ascending order), and [`DbWriter::finish`] at the end; a file not
/// finished has no valid meta page and is refused by every reader.
pub struct DbWriter<W: Write + Seek> {
    sink: Sink<W>,
    /// The root bucket, whose elements are the buckets.
    root: Tree,
    /// The bucket being filled, with its name.
    open: Option<(Vec<u8>, Tree)>,
}

impl<W: Write + Seek> DbWriter<W> {
    /// Starts a file at the current position of `out` (normally an empty
    /// file): the two meta pages are reserved, to be written by `finish`.
    pub fn new(out: W) -> Result<Self, BoltError> {
        let mut sink = Sink {
            out: BufWriter::with_capacity(256 * 1024, out),
            next: 2,
            buf: Vec::with_capacity(PAGE_SIZE),
        };
        sink.out.write_all(&[0u8; 2 * PAGE_SIZE])?;
        Ok(DbWriter {
            sink,
            root: Tree::default(),
            open: None,
        })
    }

    /// Ends the current bucket, if any, and starts bucket `name`, which must
    /// sort after every bucket before it.
    pub fn bucket(&mut self, name: &[u8]) -> Result<(), BoltError> {
        self.close_bucket()?;
        check_key(name, self.root.last_key.as_deref())?;
        // Reserve the name now so a repeated or out-of-order name fails here.
        self.root.last_key = Some(name.to_vec());
        self.open = Some((name.to_vec(), Tree::default()));
        Ok(())
    }

    /// Adds `key` to the current bucket; keys must be strictly ascending.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BoltError> {
        let (_, tree) = self.open.as_mut().ok_or(BoltError::NoBucket)?;
        check_key(key, tree.last_key.as_deref())?;
        if value.len() > MAX_VALUE {
            return Err(BoltError::ValueTooLarge);
        }
        tree.last_key = Some(key.to_vec());
        tree.push(&mut self.sink, 0, Element::leaf(0, key, value))
    }

    /// Writes the last pages, the freelist and the meta pages. Returns the
    /// output and the database size in bytes (what bbolt calls `tx.Size()`:
    /// the high-water mark times the page size).
    pub fn finish(mut self) -> Result<(W, u64), BoltError> {
        self.close_bucket()?;
        let root = match self.root.finish(&mut self.sink, false)? {
            Root::Page(pgid) => pgid,
            Root::Inline(_) => unreachable!("the root bucket is never inlined"),
        };
        // An empty freelist of our own, rather than none: readers then need
        // not scan the file to rebuild one.
        let freelist = self.sink.write(&PendingPage::default(), FLAG_FREELIST)?;
        let high_water = self.sink.next;
        let mut out = self.sink.out.into_inner().map_err(|e| e.into_error())?;
        out.seek(SeekFrom::Start(0))?;
        for page in 0..2u64 {
            let meta = Meta {
                page_size: PAGE_SIZE as u32,
                flags: 0,
                root,
                root_sequence: 0,
                freelist,
                high_water,
                // bbolt keeps meta `txid % 2` at page `txid % 2` and trusts
                // the valid one with the higher txid.
                txid: page,
            };
            let mut buf = [0u8; PAGE_SIZE];
            PageHeader {
                id: page,
                flags: FLAG_META,
                count: 0,
                overflow: 0,
            }
            .encode(&mut buf);
            buf[PAGE_HEADER..PAGE_HEADER + 64].copy_from_slice(&meta.encode());
            out.write_all(&buf)?;
        }
        out.seek(SeekFrom::Start(high_water * PAGE_SIZE as u64))?;
        out.flush()?;
        Ok((out, high_water * PAGE_SIZE as u64))
    }

    fn close_bucket(&mut self) -> Result<(), BoltError> {
        let Some((name, tree)) = self.open.take() else {
            return Ok(());
        };
        let mut value = vec![0u8; BUCKET_HEADER];
        match tree.finish(&mut self.sink, true)? {
            Root::Page(pgid) => value[..8].copy_from_slice(&pgid.to_le_bytes()),
            // Root 0 means: the bucket's only page follows the header.
            Root::Inline(page) => value.extend_from_slice(&page),
        }
        self.root.push(
            &mut self.sink,
            0,
            Element::leaf(BUCKET_LEAF_FLAG, &name, &value),
        )
    }
}

fn check_key(key: &[u8], last: Option<&[u8]>) -> Result<(), BoltError> {
    if key.is_empty() {
        return Err(BoltError::EmptyKey);
    }
    if key.len() > MAX_KEY {
        return Err(BoltError::KeyTooLarge);
    }
    if last.is_some_and(|last| key <= last) {
        return Err(BoltError::OutOfOrder);
    }
    Ok(())
}

/// Where pages go: allocates page ids in file order.
struct Sink<W: Write> {
    out: BufWriter<W>,
    next: u64,
    buf: Vec<u8>,
}

impl<W: Write> Sink<W> {
    /// Writes `page` at the next page id; returns that id.
    fn write(&mut self, page: &PendingPage, flags: u16) -> Result<u64, BoltError> {
        let id = self.next;
        page.encode(id, flags, true, &mut self.buf);
        self.out.write_all(&self.buf)?;
        self.next += (self.buf.len() / PAGE_SIZE) as u64;
        Ok(id)
    }
}

/// What a finished bucket's value points at.
enum Root {
    Page(u64),
    /// The encoded single leaf page of a small bucket.
    Inline(Vec<u8>),
}

/// One element waiting for its page.
struct Element<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
    pgid: u64,
}

impl<'a> Element<'a> {
    fn leaf(flags: u32, key: &'a [u8], value: &'a [u8]) -> Self {
        Element {
            flags,
            key,
            value,
            pgid: 0,
        }
    }

    fn branch(key: &'a [u8], pgid: u64) -> Self {
        Element {
            flags: 0,
            key,
            value: &[],
            pgid,
        }
    }

    fn size(&self) -> usize {
        ELEMENT + self.key.len() + self.value.len()
    }
}

/// A B+tree built bottom-up: `levels[0]` collects leaf elements, each
/// level above the branch elements of the pages written below it.
#[derive(Default)]
struct Tree {
    levels: Vec<PendingPage>,
    /// Pages written so far, per level.
    written: Vec<u64>,
    last_key: Option<Vec<u8>>,
}

impl Tree {
    fn push<W: Write>(
        &mut self,
        sink: &mut Sink<W>,
        level: usize,
        e: Element<'_>,
    ) -> Result<(), BoltError> {
        if self.levels.len() == level {
            self.levels.push(PendingPage::default());
            self.written.push(0);
        }
        let page = &self.levels[level];
        if !page.is_empty() && page.size() + e.size() > PAGE_SIZE {
            self.flush(sink, level)?;
        }
        self.levels[level].add(&e);
        Ok(())
    }

    /// Writes the pending page of `level` and adds it to the level above.
    fn flush<W: Write>(&mut self, sink: &mut Sink<W>, level: usize) -> Result<(), BoltError> {
        let page = std::mem::take(&mut self.levels[level]);
        let pgid = sink.write(&page, level_flags(level))?;
        self.written[level] += 1;
        self.push(sink, level + 1, Element::branch(page.first_key(), pgid))
    }

    /// Writes what is pending, level by level, up to a single root page.
    fn finish<W: Write>(mut self, sink: &mut Sink<W>, inline: bool) -> Result<Root, BoltError> {
        // bbolt keeps a bucket inline when it is one leaf holding no nested
        // bucket and at most a quarter page; done the same here, files are
        // as etcd's.
        if inline
            && self.levels.len() <= 1
            && self.levels.first().is_none_or(|p| {
                p.size() <= PAGE_SIZE / 4 && p.elems.iter().all(|e| e.0 & BUCKET_LEAF_FLAG == 0)
            })
        {
            let page = self.levels.pop().unwrap_or_default();
            let mut buf = Vec::new();
            page.encode(0, FLAG_LEAF, false, &mut buf);
            return Ok(Root::Inline(buf));
        }
        if self.levels.is_empty() {
            self.levels.push(PendingPage::default());
            self.written.push(0);
        }
        let mut level = 0;
        loop {
            if level + 1 == self.levels.len() && self.written[level] == 0 {
                let page = std::mem::take(&mut self.levels[level]);
                return Ok(Root::Page(sink.write(&page, level_flags(level))?));
            }
            if !self.levels[level].is_empty() {
                self.flush(sink, level)?;
            }
            level += 1;
        }
    }
}

fn level_flags(level: usize) -> u16 {
    if level == 0 {
        FLAG_LEAF
    } else {
        FLAG_BRANCH
    }
}

/// The elements of one page not yet written: keys and values back to back
/// in `data`, and per element (flags, key size, value size, child page).
#[derive(Default)]
struct PendingPage {
    elems: Vec<(u32, u32, u32, u64)>,
    data: Vec<u8>,
}

impl PendingPage {
    fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    fn size(&self) -> usize {
        PAGE_HEADER + self.elems.len() * ELEMENT + self.data.len()
    }

    fn add(&mut self, e: &Element<'_>) {
        self.elems
            .push((e.flags, e.key.len() as u32, e.value.len() as u32, e.pgid));
        self.data.extend_from_slice(e.key);
        self.data.extend_from_slice(e.value);
    }

    fn first_key(&self) -> &[u8] {
        let ksize = self.elems.first().map_or(0, |e| e.1 as usize);
        &self.data[..ksize]
    }

    /// Encodes the page into `buf`: padded to whole pages (with the
    /// overflow count set) for a page of the file, unpadded for an inline
    /// bucket.
    fn encode(&self, id: u64, flags: u16, pad: bool, buf: &mut Vec<u8>) {
        let size = self.size();
        let pages = size.div_ceil(PAGE_SIZE).max(1);
        buf.clear();
        buf.resize(if pad { pages * PAGE_SIZE } else { size }, 0);
        PageHeader {
            id,
            flags,
            count: self.elems.len() as u16,
            overflow: if pad { (pages - 1) as u32 } else { 0 },
        }
        .encode(buf);
        let data_start = PAGE_HEADER + self.elems.len() * ELEMENT;
        let mut at = data_start;
        for (i, &(eflags, ksize, vsize, pgid)) in self.elems.iter().enumerate() {
            let elem = PAGE_HEADER + i * ELEMENT;
            let pos = (at - elem) as u32;
            let out = &mut buf[elem..elem + ELEMENT];
            if flags == FLAG_BRANCH {
                BranchElement { pos, ksize, pgid }.encode(out);
            } else {
                LeafElement {
                    flags: eflags,
                    pos,
                    ksize,
                    vsize,
                }
                .encode(out);
            }
            at += (ksize + vsize) as usize;
        }
        buf[data_start..size].copy_from_slice(&self.data);
    }
}
