//! A crash at any step of an install leaves the old state whole or the new
//! one whole, and reopening clears what the cut-short install left.
//!
//! A "crash" here drops every handle between two steps and reopens the
//! database. sled flushes on drop, so more of the half-built install is on
//! disk than after a real crash: the harder case for the commit point.

use super::*;
use crate::snapshot::SnapshotWriter;

const APPLIED: &[u8] = b"m-applied";

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn entries(list: &[(&str, &str)]) -> Entries {
    list.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn old_entries() -> Entries {
    entries(&[("k1", "old 1"), ("k2", "old 2"), ("m-applied", "old")])
}

/// The snapshot's entries, in key order as an export writes them; many, so
/// that loading takes several chunks.
fn new_entries() -> Entries {
    let mut all: Entries = (0..25_000)
        .map(|i| (format!("k{i:05}").into_bytes(), b"new".to_vec()))
        .collect();
    all.push((APPLIED.to_vec(), b"new".to_vec()));
    all
}

fn meta(index: u64) -> Meta {
    Meta {
        last_log_id: Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            index,
        )),
        last_membership: Default::default(),
        snapshot_id: index.to_string(),
    }
}

struct Member {
    dir: tempfile::TempDir,
}

impl Member {
    /// A member whose live tree holds the old entries.
    fn with_old_state() -> Member {
        let member = Member {
            dir: tempfile::tempdir().unwrap(),
        };
        let (db, backend) = member.open();
        let tree = backend.state_tree().unwrap();
        for (k, v) in old_entries() {
            tree.insert(k, v).unwrap();
        }
        db.flush().unwrap();
        member
    }

    fn open(&self) -> (sled::Db, Backend) {
        // sled's flusher thread lets go of the files a moment after the
        // last handle is dropped.
        let mut tries = 0;
        let db = loop {
            match sled::Config::new().path(self.dir.path().join("db")).open() {
                Ok(db) => break db,
                Err(_) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopening the database: {e}"),
            }
        };
        let backend = Backend::open(&db, &self.dir.path().join("snap")).unwrap();
        (db, backend)
    }

    /// Writes the new snapshot where a received one lands.
    fn receive(&self, backend: &Backend) -> PathBuf {
        let path = backend.receiving_path();
        let mut w = SnapshotWriter::new(fs::File::create(&path).unwrap()).unwrap();
        for (k, v) in new_entries() {
            w.entry(&k, &v).unwrap();
        }
        w.finish().unwrap().0.sync_all().unwrap();
        path
    }

    /// Reopens after a crash: what the live tree holds, and the files and
    /// state trees left.
    fn reopen(&self) -> (Entries, Vec<String>, usize) {
        let (db, backend) = self.open();
        let tree = backend.state_tree().unwrap();
        let data = tree
            .iter()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        let files = fs::read_dir(self.dir.path().join("snap"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let trees = db
            .tree_names()
            .iter()
            .filter(|n| tree_generation(n).is_some())
            .count();
        (data, files, trees)
    }
}

/// The steps an install goes through; the test stops after each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Received,
    Begun,
    HalfLoaded,
    Loaded,
    Sealed,
    Committed,
    Forgotten,
}

const STEPS: [Step; 7] = [
    Step::Received,
    Step::Begun,
    Step::HalfLoaded,
    Step::Loaded,
    Step::Sealed,
    Step::Committed,
    Step::Forgotten,
];

/// Runs an install until `stop`, then drops everything as a crash would.
fn install_until(member: &Member, stop: Step) {
    let (_db, backend) = member.open();
    let received = member.receive(&backend);
    if stop == Step::Received {
        return;
    }
    let mut install = backend.begin_install(&received).unwrap();
    if stop == Step::Begun {
        return;
    }
    if stop == Step::HalfLoaded {
        let half = new_entries().into_iter().take(12_345).map(Ok);
        install.load_from(half, APPLIED).unwrap();
        return;
    }
    let last = install.load(APPLIED).unwrap();
    assert_eq!(last.as_deref(), Some(&b"new"[..]));
    if stop == Step::Loaded {
        return;
    }
    install.seal(APPLIED, b"new").unwrap();
    if stop == Step::Sealed {
        return;
    }
    let (_tree, installed) = install.commit(meta(10)).unwrap();
    if stop == Step::Committed {
        return;
    }
    installed.forget_old().unwrap();
}

#[test]
fn a_crash_at_any_step_of_an_install_leaves_the_old_state_or_the_whole_new_one() {
    for stop in STEPS {
        let member = Member::with_old_state();
        install_until(&member, stop);
        let (data, files, trees) = member.reopen();
        if stop < Step::Committed {
            assert_eq!(data, old_entries(), "crash after {stop:?}");
            assert!(files.is_empty(), "after {stop:?}, left {files:?}");
        } else {
            assert_eq!(data, new_entries(), "crash after {stop:?}");
            assert_eq!(files, vec![snapshot_name(1)], "after {stop:?}");
        }
        assert_eq!(trees, 1, "after {stop:?}, half-built trees are left");
    }
}

#[test]
fn the_installed_snapshot_is_current_after_a_crash() {
    let member = Member::with_old_state();
    install_until(&member, Step::Committed);
    let (_db, backend) = member.open();
    let (file, current) = backend
        .open_current_snapshot()
        .unwrap()
        .expect("a snapshot");
    assert_eq!(current.last_log_id, meta(10).last_log_id);
    let read: Entries = SnapshotReader::new(file)
        .unwrap()
        .collect::<io::Result<_>>()
        .unwrap();
    assert_eq!(read, new_entries());
}

#[test]
fn an_older_build_does_not_replace_an_installed_snapshot() {
    let member = Member::with_old_state();
    install_until(&member, Step::Forgotten);
    let (_db, backend) = member.open();
    let (generation, path) = backend.building_path();
    fs::write(&path, b"an older snapshot").unwrap();
    backend
        .publish_snapshot(generation, &path, meta(7))
        .unwrap();
    let (_, current) = backend.open_current_snapshot().unwrap().unwrap();
    assert_eq!(current.last_log_id, meta(10).last_log_id);
    let (generation, path) = backend.building_path();
    fs::write(&path, b"a newer snapshot").unwrap();
    backend
        .publish_snapshot(generation, &path, meta(12))
        .unwrap();
    let (_, current) = backend.open_current_snapshot().unwrap().unwrap();
    assert_eq!(current.last_log_id, meta(12).last_log_id);
    // Only the current snapshot's file is kept.
    let files: Vec<_> = fs::read_dir(&backend.snap_dir).unwrap().collect();
    assert_eq!(files.len(), 1);
}
