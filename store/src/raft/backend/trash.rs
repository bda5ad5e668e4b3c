//! Deleting large files without stalling everyone else's fsyncs.
//!
//! Unlinking a file of a gigabyte frees all its blocks in one journal
//! transaction (and, on a file system mounted with online discard, trims
//! them all at its commit); the raft log's next fsync waits for that
//! transaction. At 1 GiB that stalled every write for 300-600 ms each time
//! a superseded raft snapshot or a defragmented database was deleted.
//!
//! So such files are moved into the member's `trash/` directory (one
//! rename) and a background thread frees them a step at a time: it cuts
//! [`STEP`] bytes off the end, pauses, and so on, then unlinks what is
//! left. A file is cut only once no handle of this process has it open:
//! a reader of an old snapshot or a read view of a replaced database
//! keeps its data after an unlink, but not after a truncation. Whatever
//! the trash holds at start (a crash left it) is freed the same way.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// Bytes freed per step.
const STEP: u64 = 32 << 20;
/// Pause between steps: the log's fsyncs commit the journal in between.
const PAUSE: Duration = Duration::from_millis(20);
/// How often files still open are looked at again.
const RECHECK: Duration = Duration::from_millis(500);

/// A member's trash directory and the thread that empties it.
pub struct Trash {
    dir: PathBuf,
    /// Names handed out, unique within this process.
    next: AtomicU64,
    /// Set when something was thrown away; the thread waits on it.
    wake: Arc<(Mutex<bool>, Condvar)>,
}

impl Trash {
    /// Opens `dir` (made if missing) and starts emptying it in the
    /// background, for as long as the returned handle lives.
    pub fn start(dir: &Path) -> io::Result<Arc<Trash>> {
        fs::create_dir_all(dir)?;
        let trash = Arc::new(Trash {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(0),
            wake: Arc::new((Mutex::new(true), Condvar::new())),
        });
        let weak = Arc::downgrade(&trash);
        let wake = trash.wake.clone();
        std::thread::Builder::new()
            .name("trash".into())
            .spawn(move || empty_while_alive(weak, wake))?;
        Ok(trash)
    }

    /// Moves `path` (a file or a directory, on the trash's file system)
    /// into the trash, to be freed in the background.
    pub fn discard(&self, path: &Path) -> io::Result<()> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fs::rename(
            path,
            self.dir.join(format!("{}-{n}-{name}", std::process::id())),
        )?;
        let (flag, cond) = &*self.wake;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cond.notify_one();
        Ok(())
    }

    /// Frees what can be freed now; says whether anything is left (files
    /// still open).
    pub fn empty_once(&self) -> io::Result<bool> {
        empty(&self.dir)
    }
}

fn empty_while_alive(trash: Weak<Trash>, wake: Arc<(Mutex<bool>, Condvar)>) {
    let mut left = true;
    loop {
        {
            let (flag, cond) = &*wake;
            let mut woken = flag.lock().unwrap_or_else(|e| e.into_inner());
            if !*woken {
                let wait = if left {
                    RECHECK
                } else {
                    Duration::from_secs(5)
                };
                woken = cond
                    .wait_timeout(woken, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *woken = false;
        }
        let Some(trash) = trash.upgrade() else {
            return;
        };
        left = match trash.empty_once() {
            Ok(left) => left,
            Err(e) => {
                tracing::warn!("emptying {}: {e}", trash.dir.display());
                true
            }
        };
    }
}

/// Frees every file under `dir` that no handle of this process has open,
/// a step at a time, and the directories emptied; says whether anything
/// is left.
fn empty(dir: &Path) -> io::Result<bool> {
    let open = open_files()?;
    let mut left = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        left |= !free(&entry.path(), &open)?;
    }
    Ok(left)
}

/// Frees `path` (a file, or a directory with all it holds) unless some of
/// it is open; says whether it is gone.
fn free(path: &Path, open: &HashSet<(u64, u64)>) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        let mut all = true;
        for entry in fs::read_dir(path)? {
            all &= free(&entry?.path(), open)?;
        }
        if all {
            fs::remove_dir(path)?;
        }
        return Ok(all);
    }
    if open.contains(&(meta.dev(), meta.ino())) {
        return Ok(false);
    }
    if meta.is_file() && meta.len() > STEP {
        let file = fs::OpenOptions::new().write(true).open(path)?;
        let mut len = meta.len();
        while len > STEP {
            len -= STEP;
            file.set_len(len)?;
            std::thread::sleep(PAUSE);
        }
    }
    fs::remove_file(path)?;
    Ok(true)
}

/// The (device, inode) of every file this process has open.
fn open_files() -> io::Result<HashSet<(u64, u64)>> {
    let mut open = HashSet::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        // A descriptor closed meanwhile (the read_dir's own, say) is gone.
        if let Ok(meta) = fs::metadata(entry?.path()) {
            open.insert((meta.dev(), meta.ino()));
        }
    }
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("not within 5 s: {what}");
    }

    #[test]
    fn a_discarded_file_is_freed_once_closed_and_its_reader_keeps_its_data() {
        let root = tempfile::tempdir().unwrap();
        let trash = Trash::start(&root.path().join("trash")).unwrap();
        let big = root.path().join("old.snap");
        let data: Vec<u8> = (0..(3 * STEP + 5)).map(|i| (i % 251) as u8).collect();
        fs::write(&big, &data).unwrap();
        let dir = root.path().join("db.1");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("db"), b"small").unwrap();

        let reader = fs::File::open(&big).unwrap();
        trash.discard(&big).unwrap();
        trash.discard(&dir).unwrap();
        assert!(!big.exists() && !dir.exists());
        // The directory goes; the open file stays, whole, for its reader.
        wait_until("the directory freed", || {
            fs::read_dir(root.path().join("trash")).unwrap().count() == 1
        });
        std::thread::sleep(RECHECK * 2);
        let mut read = Vec::new();
        io::Read::read_to_end(&mut &reader, &mut read).unwrap();
        assert!(read == data, "the reader's file was cut");
        drop(reader);
        wait_until("the closed file freed", || {
            fs::read_dir(root.path().join("trash")).unwrap().count() == 0
        });
    }

    #[test]
    fn what_a_crash_left_in_the_trash_is_freed_at_start() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("trash");
        fs::create_dir_all(dir.join("7-0-db.2")).unwrap();
        fs::write(dir.join("7-0-db.2").join("blob"), vec![1; 1 << 20]).unwrap();
        fs::write(dir.join("7-1-00000000000000000003.snap"), b"x").unwrap();
        let _trash = Trash::start(&dir).unwrap();
        wait_until("the leftovers freed", || {
            fs::read_dir(&dir).unwrap().count() == 0
        });
    }
}
