//! Snapshots in etcd's format, so that etcd's tools read ferrocd's
//! snapshots: the store written as etcd 3.4's backend database (a bbolt
//! file in etcd's bucket layout, [`layout`]), followed on the wire and in
//! saved files by the SHA-256 of the database bytes, which `etcdctl
//! snapshot restore` checks.

pub mod cli;
mod export;
pub mod layout;
mod restore;
mod status;

pub use export::{export, Exported};
pub use restore::{restore, RestoreOptions, Restored};
pub use status::{human_bytes, status, SnapshotStatus};

use crate::bbolt::BoltError;
use crate::config::ConfigError;
use crate::mvcc::{ImportError, MvccError};
use crate::raft::backend::BackendError;

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
    #[error("data-dir {0:?} exists")]
    DataDirExists(std::path::PathBuf),
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    #[error("expected sha256 {}, got {}", go_bytes(expected), go_bytes(got))]
    HashMismatch {
        expected: [u8; TRAILER_LEN],
        got: [u8; TRAILER_LEN],
    },
    #[error(transparent)]
    Flags(#[from] ConfigError),
    #[error("restoring the store: {0}")]
    Import(#[from] ImportError),
    #[error("writing the data directory: {0}")]
    Database(#[from] sled::Error),
    #[error("writing the data directory: {0}")]
    Backend(#[from] BackendError),
}

/// Bytes as Go prints a byte slice: `[1 2 3]` (etcd's hash mismatch text).
fn go_bytes(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(u8::to_string).collect();
    format!("[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests;
