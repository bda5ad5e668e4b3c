//! Snapshots in etcd's format, so that etcd's tools read ferrocd's
//! snapshots: the store written as etcd 3.4's backend database (a bbolt
//! file in etcd's bucket layout, [`layout`]), followed on the wire and in
//! saved files by the SHA-256 of the database bytes, which `etcdctl
//! snapshot restore` checks.

pub mod cli;
mod export;
pub mod layout;
mod status;

pub use export::{export, Exported};
pub use status::{human_bytes, status, SnapshotStatus};

use crate::bbolt::BoltError;
use crate::mvcc::MvccError;

/// Bytes of the trailer: a SHA-256 digest.
pub const TRAILER_LEN: usize = 32;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Bolt(#[from] BoltError),
    #[error("reading the store: {0}")]
    Store(#[from] MvccError),
    #[error("the store was compacted or replaced during every attempt to snapshot it")]
    StoreChanged,
    #[error("the snapshot was cancelled")]
    Cancelled,
    #[error("snapshot integrity: {0}")]
    Integrity(String),
}

#[cfg(test)]
mod tests;
