//! `Maintenance.Snapshot`: the store as etcd's backend database, streamed
//! in chunks and followed by the SHA-256 of the database, as etcd sends it.
//!
//! The database is written to a file under the data directory first (its
//! meta pages, at the start, are known only at the end), then read back in
//! 32 KiB chunks; memory holds a few chunks, never the file. The file is
//! unlinked as soon as it is created: it lives only as long as the open
//! handle, so a client that goes away, an error or a crash leaves nothing
//! on disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferrocd_proto::etcdserverpb::SnapshotResponse;
use tokio::sync::mpsc;
use tonic::Status;

use super::Context;
use crate::etcd_snapshot::{self, layout, SnapshotError};

/// Bytes per message, as etcd sends them.
const CHUNK: usize = 32 * 1024;
/// Messages buffered ahead of the client.
const AHEAD: usize = 4;
/// Progress is logged every this many bytes sent.
const PROGRESS_EVERY: u64 = 64 << 20;

type Item = Result<SnapshotResponse, Status>;

/// Starts a snapshot; its messages arrive on the returned receiver.
pub(super) fn start(ctx: &Context) -> Result<mpsc::Receiver<Item>, Status> {
    let dir = scratch_dir(&ctx.config().data_dir);
    let file = scratch_file(&dir).map_err(|e| {
        Status::internal(format!(
            "etcdserver: cannot create a snapshot file in {}: {e}",
            dir.display()
        ))
    })?;
    let (tx, rx) = mpsc::channel(AHEAD);
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        match produce(&ctx, file, &tx) {
            Ok(size) => tracing::info!(
                size,
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot: sent"
            ),
            Err(SnapshotError::Cancelled) => {
                tracing::info!("snapshot: the client went away; stopped")
            }
            Err(e) => {
                tracing::warn!(error = %e, "snapshot: failed");
                let _ = tx.blocking_send(Err(Status::internal(format!("etcdserver: {e}"))));
            }
        }
    });
    Ok(rx)
}

/// Where snapshot files are written while they are being sent.
pub fn scratch_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("tmp")
}

/// A new file in `dir`, already unlinked. Files another process left
/// (a crash between creating and unlinking one) are deleted first.
fn scratch_file(dir: &Path) -> std::io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    // Names carry this process's start time as well as its pid: in a
    // container every incarnation may be pid 1.
    static OURS: OnceLock<String> = OnceLock::new();
    let ours = OURS.get_or_init(|| {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("snapshot-{}-{started:x}-", std::process::id())
    });
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("snapshot-") && !name.starts_with(ours.as_str()) {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{ours}{n}.db.part"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Writes the database into `file` and sends it, then its digest. Returns
/// the database size.
fn produce(ctx: &Context, mut file: File, tx: &mpsc::Sender<Item>) -> Result<u64, SnapshotError> {
    let exported = etcd_snapshot::export(ctx.mvcc(), &mut file, &|| tx.is_closed())?;
    let size = exported.size;
    tracing::info!(revision = exported.revision, size, "snapshot: sending");
    file.seek(SeekFrom::Start(0))?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    // The first message says which point in time this is, and in which
    // storage version.
    let mut header = Some(ctx.header_exact(exported.revision));
    let mut version = String::from_utf8_lossy(layout::CLUSTER_VERSION_3_4).into_owned();
    let mut sent = 0u64;
    let mut next_log = PROGRESS_EVERY;
    while sent < size {
        let mut blob = vec![0u8; CHUNK.min((size - sent) as usize)];
        file.read_exact(&mut blob)?;
        digest.update(&blob);
        sent += blob.len() as u64;
        send(
            tx,
            SnapshotResponse {
                header: header.take(),
                remaining_bytes: size - sent,
                blob,
                version: std::mem::take(&mut version),
            },
        )?;
        if sent >= next_log {
            tracing::info!(sent, size, "snapshot: sending");
            next_log += PROGRESS_EVERY;
        }
    }
    // The digest follows the data, for `etcdctl snapshot restore` to check.
    send(
        tx,
        SnapshotResponse {
            header: header.take(),
            remaining_bytes: 0,
            blob: digest.finish().as_ref().to_vec(),
            version: String::new(),
        },
    )?;
    Ok(size)
}

fn send(tx: &mpsc::Sender<Item>, resp: SnapshotResponse) -> Result<(), SnapshotError> {
    tx.blocking_send(Ok(resp))
        .map_err(|_| SnapshotError::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_files_are_unlinked_and_leftovers_removed() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir
            .path()
            .join(format!("snapshot-{}-0-0.db.part", std::process::id()));
        std::fs::write(&leftover, b"left by a crash").unwrap();
        let _file = scratch_file(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
