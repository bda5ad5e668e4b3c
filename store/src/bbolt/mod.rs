//! bbolt's file format, which etcd's backend database and snapshots use:
//! a writer that builds a whole file in one pass from sorted input, and a
//! reader that walks one. Neither updates a file in place; that is all a
//! snapshot needs (written once, streamed, read back for status and
//! restore).
//!
//! The format, in short: the file is 4 KiB pages. Pages 0 and 1 hold two
//! copies of the meta record (magic, version, page size, the root bucket's
//! page, the freelist's page, the high-water page id, a transaction id and
//! an FNV-1a checksum); a reader trusts the valid one with the higher
//! transaction id. Every other page is a B+tree page (branch or leaf), the
//! freelist, or the continuation of a page that overflows. The root bucket
//! is a tree whose leaf elements are buckets; a bucket's value is a header
//! (root page, sequence) and, when the root is 0, the bucket's only leaf
//! page inline.

mod page;
mod reader;
mod writer;

pub use page::{Meta, PAGE_SIZE};
pub use reader::{DbReader, FileSource, Source};
pub use writer::DbWriter;

/// Why a bbolt file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("bbolt file: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt bbolt file: {0}")]
    Corrupt(&'static str),
    #[error("corrupt bbolt file: page {0} is neither reachable nor free")]
    Unreachable(u64),
    #[error("bbolt: keys and bucket names must be given in ascending order")]
    OutOfOrder,
    #[error("bbolt: empty key")]
    EmptyKey,
    #[error("bbolt: key too large")]
    KeyTooLarge,
    #[error("bbolt: value too large")]
    ValueTooLarge,
    #[error("bbolt: a key was given before any bucket")]
    NoBucket,
}

#[cfg(test)]
mod tests;
