//! Defragmentation: the state database rewritten into a new one holding
//! only live data, while the member keeps serving, then switched to in one
//! durable step. sled reuses freed space but never gives it back to the
//! file system, so after a compaction this is how a member's database
//! shrinks (and how a member under the NOSPACE alarm gets below its quota
//! again), as etcd's defragment rewrites its bbolt file.
//!
//! The live database's directory is named by the pointer file
//! `member/db.live` (`db` when there is none: no defragmentation yet). A
//! defragmentation fills `db.<n+1>` (see [`crate::mvcc::Mvcc::move_to`]:
//! writers wait only for the last changes), makes it durable, then
//! rewrites the pointer (write, fsync, rename, fsync): the commit point. A
//! crash before it leaves the old database live; after it, the new one.
//! Opening deletes every database directory the pointer does not name.

use std::time::{Duration, Instant};

use super::*;
use crate::mvcc::{Mvcc, MvccError};

/// The file naming the live database's directory.
const POINTER: &str = "db.live";
/// The first database's directory.
const FIRST: &str = "db";

/// Why a defragmentation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DefragError {
    #[error("this store was opened without a member directory to defragment in")]
    Unsupported,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("defragmenting: {0}")]
    Store(#[from] MvccError),
}

impl From<sled::Error> for DefragError {
    fn from(e: sled::Error) -> Self {
        DefragError::Backend(e.into())
    }
}

impl From<io::Error> for DefragError {
    fn from(e: io::Error) -> Self {
        DefragError::Backend(e.into())
    }
}

/// What a defragmentation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defragmented {
    /// Database size before and after, in bytes.
    pub before: u64,
    pub after: u64,
    pub took: Duration,
    /// How long writers were held off while the last changes were copied
    /// and the new database made live.
    pub held: Duration,
    /// How long moving the old database out of the way took (its files
    /// are freed in the background).
    pub removed: Duration,
}

/// The number of database directory `name` (`db` is 0), if it is one.
fn db_number(name: &str) -> Option<u64> {
    if name == FIRST {
        return Some(0);
    }
    name.strip_prefix("db.")?.parse().ok()
}

fn db_name(n: u64) -> String {
    match n {
        0 => FIRST.to_string(),
        n => format!("db.{n}"),
    }
}

/// The live database's name, from the pointer.
fn live_name(member_dir: &Path) -> io::Result<String> {
    match fs::read_to_string(member_dir.join(POINTER)) {
        Ok(name) => {
            let name = name.trim().to_string();
            if db_number(&name).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{POINTER} names {name:?}, not a state database"),
                ));
            }
            Ok(name)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FIRST.to_string()),
        Err(e) => Err(e),
    }
}

/// The live state database's path in `member_dir`; deletes the databases
/// a defragmentation cut short or left behind.
pub fn live_db_path(member_dir: &Path) -> io::Result<PathBuf> {
    let live = live_name(member_dir)?;
    for entry in fs::read_dir(member_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != live && db_number(&name).is_some() && entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(member_dir.join(live))
}

impl Backend {
    /// Rewrites the state database into a new one and switches to it;
    /// `mvcc` is the store living in it. One at a time, and never during a
    /// snapshot install or publication.
    pub fn defragment(&self, mvcc: &Mvcc) -> Result<Defragmented, DefragError> {
        let (member_dir, open_db) = self.place.as_ref().ok_or(DefragError::Unsupported)?;
        let started = Instant::now();
        let _switching = self.switching();
        // The size of the database holding every write applied so far.
        mvcc.settle();
        let before = self.db().size_on_disk()?;
        let old_name = live_name(member_dir)?;
        let new_name = db_name(db_number(&old_name).unwrap_or(0) + 1);
        let new_path = member_dir.join(&new_name);
        if new_path.exists() {
            fs::remove_dir_all(&new_path)?;
        }
        let new_db = open_db(&new_path)?;
        let moved = (|| -> Result<Duration, DefragError> {
            let target = new_db.open_tree(tree_name(self.live().tree))?;
            mvcc.move_to(&target, || -> Result<(), DefragError> {
                // Writers are held off: the new database becomes live.
                let live = self.live().clone();
                new_db.insert(LIVE, bincode::serialize(&live).map_err(BackendError::from)?)?;
                new_db.flush()?;
                write_pointer(member_dir, &new_name)?;
                *self.db.write().unwrap_or_else(|e| e.into_inner()) = new_db.clone();
                Ok(())
            })
        })();
        let held = match moved {
            Ok(held) => held,
            Err(e) => {
                drop(new_db);
                let _ = fs::remove_dir_all(&new_path);
                return Err(e);
            }
        };
        // The old database's last handles go as their holders move on;
        // its files go to the trash (or, if that fails, at the next start).
        let removing = Instant::now();
        if let Err(e) = self.forget_dir(&member_dir.join(&old_name)) {
            tracing::warn!("removing the defragmented database {old_name}: {e}");
        }
        let removed = removing.elapsed();
        Ok(Defragmented {
            before,
            after: new_db.size_on_disk()?,
            took: started.elapsed(),
            held,
            removed,
        })
    }
}

/// Points `member_dir`'s pointer at `name`, durably.
fn write_pointer(member_dir: &Path, name: &str) -> io::Result<()> {
    let tmp = member_dir.join(format!("{POINTER}.tmp"));
    fs::write(&tmp, name)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, member_dir.join(POINTER))?;
    sync_dir(member_dir)
}

#[cfg(test)]
#[path = "defrag_tests.rs"]
mod tests;
