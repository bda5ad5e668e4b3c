//! Long whole-store work (building a raft snapshot: an export of every
//! record) on a thread of its own at a lower CPU priority, so that on a
//! busy machine the threads serving writes (gRPC, raft, the WAL's fsync,
//! apply) run first and the export takes the time left over.
//!
//! At 1.2M keys an export takes 8-16 s of CPU and disk; run at the normal
//! priority on 2 cores, 8 writers fell from ~2600 to ~1000 puts/s while it
//! ran (bench/RESULTS.md). The work is the same and as durable; only the
//! scheduler's choice changes. The priority is raised (`nice`) on the new
//! thread alone, which ends with the work, so no pooled thread keeps it.

use std::fs::File;
use std::io::{self, Write};

/// How much nicer than its caller the background thread runs (Linux
/// caps the result at 19).
pub const NICER_BY: i32 = 10;

/// Runs `work` on a new thread named `name`, `NICER_BY` nicer than the
/// caller, and waits for it without blocking the async runtime.
pub async fn run_nicer<T, F>(name: &str, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // A priority that cannot be lowered (a seccomp filter, say)
            // leaves the work at the normal one: it still runs.
            let _ = lower_own_priority(NICER_BY);
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| io::Error::other("the background work panicked"))
}

/// The calling thread's nice value.
pub fn own_nice() -> io::Result<i32> {
    // getpriority may return -1 as a value: errno tells it from an error.
    // SAFETY: plain system calls on the calling thread's id; errno is
    // thread-local.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, thread_id());
        if n == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n)
    }
}

/// Makes the calling thread `by` nicer (on Linux, `PRIO_PROCESS` with a
/// thread id sets that thread only).
fn lower_own_priority(by: i32) -> io::Result<()> {
    let target = (own_nice()? + by).min(19);
    // SAFETY: a plain system call on the calling thread's id.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, thread_id(), target) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn thread_id() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as libc::id_t }
}

/// Bytes written to a [`SyncedAsItGrows`] between two syncs.
pub const SYNC_EVERY: u64 = 16 << 20;

/// A file written by background work, synced every [`SYNC_EVERY`] bytes
/// as it grows. Left to the kernel, a snapshot file of a gigabyte sits in
/// the page cache until written back in bulk (or by the final fsync), and
/// the raft log's fsyncs queue behind that writeback: at 1.3 GB, WAL
/// fsyncs of 256-512 ms and writes stalled 300-480 ms (bench/RESULTS.md).
/// Synced in small steps, the writeback comes in small pieces.
pub struct SyncedAsItGrows {
    file: File,
    unsynced: u64,
}

impl SyncedAsItGrows {
    pub fn new(file: File) -> Self {
        SyncedAsItGrows { file, unsynced: 0 }
    }

    /// The file, synced whole.
    pub fn finish(self) -> io::Result<File> {
        self.file.sync_all()?;
        Ok(self.file)
    }
}

impl Write for SyncedAsItGrows {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_nicer_than_its_caller_and_the_caller_stays_as_it_was() {
        let before = own_nice().unwrap();
        let (inside, name) = run_nicer("nicer-test", || {
            let name = std::thread::current().name().map(str::to_string);
            (own_nice().unwrap(), name)
        })
        .await
        .unwrap();
        assert_eq!(inside, (before + NICER_BY).min(19));
        assert_eq!(name.as_deref(), Some("nicer-test"));
        assert_eq!(own_nice().unwrap(), before);
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error_not_a_hang() {
        let r = run_nicer("nicer-panic", || -> u8 { panic!("boom") }).await;
        assert!(r.is_err());
    }

    #[test]
    fn a_file_synced_as_it_grows_holds_what_was_written_and_counts_from_each_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = SyncedAsItGrows::new(File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
        for _ in 0..17 {
            f.write_all(&chunk).unwrap();
        }
        // 16 MiB synced, 1 MiB since.
        assert_eq!(f.unsynced, 1 << 20);
        f.finish().unwrap();
        let read = std::fs::read(&path).unwrap();
        assert_eq!(read.len(), 17 << 20);
        assert!(read.chunks(1 << 20).all(|c| c == chunk.as_slice()));
    }
}
