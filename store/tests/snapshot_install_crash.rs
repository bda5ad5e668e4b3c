//! Installing a snapshot is atomic under a crash: a member killed with
//! SIGKILL at any moment of an install comes back with its old state whole
//! (old applied log id, old data) or the snapshot's state whole, never a
//! mix. The install runs in a child process (this test binary run again)
//! that the test kills at points spread over the install's duration.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocd::auth::AuthStore;
use ferrocd::lease::Lessor;
use ferrocd::mvcc::{KeyRange, Mvcc, RangeOptions, ReadView};
use ferrocd::raft::{Backend, LogId, Request, StateMachine, TypeConfig};
use ferrocd::watch::WatchHub;
use ferrocd_proto::etcdserverpb::PutRequest;
use ferrocd_proto::ferrocdpb::{internal_request, InternalRequest};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, RaftSnapshotBuilder, SnapshotMeta};

/// Names the member directory the child installs into.
const CHILD_DIR: &str = "FERROCD_INSTALL_CHILD_DIR";
const OLD_KEYS: u64 = 500;
const NEW_KEYS: u64 = 100_000;

type Meta = SnapshotMeta<u64, ferrocd::raft::Member>;

fn open(dir: &Path) -> (Arc<Mvcc>, StateMachine) {
    let db = sled::Config::new().path(dir.join("db")).open().unwrap();
    let backend = Arc::new(Backend::open(&db, &dir.join("snap")).unwrap());
    let mvcc = Arc::new(Mvcc::open(backend.state_tree().unwrap()).unwrap());
    let lessor = Arc::new(Lessor::new(Lessor::min_ttl_for(Duration::from_secs(1))));
    let hub = WatchHub::new(mvcc.clone(), 1 << 20);
    let auth = Arc::new(AuthStore::new(Duration::from_secs(300)));
    let alarms = Arc::new(ferrocd::alarm::Alarms::new());
    let sm = StateMachine::new(mvcc.clone(), lessor, auth, alarms, hub, backend);
    (mvcc, sm)
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// Applies `n` puts of `prefix<i>` as entries 1..=n; returns the last id.
async fn fill(sm: &mut StateMachine, prefix: &str, n: u64) -> LogId {
    for start in (1..=n).step_by(1000) {
        let entries: Vec<Entry<TypeConfig>> = (start..(start + 1000).min(n + 1))
            .map(|i| Entry {
                log_id: log_id(i),
                payload: EntryPayload::Normal(Request::single(InternalRequest {
                    id: i,
                    request: Some(internal_request::Request::Put(PutRequest {
                        key: format!("{prefix}{i:06}").into_bytes(),
                        value: prefix.as_bytes().to_vec(),
                        ..Default::default()
                    })),
                    ..Default::default()
                })),
            })
            .collect();
        sm.apply(entries).await.unwrap();
    }
    log_id(n)
}

fn count(mvcc: &Mvcc, prefix: &str) -> usize {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let opts = RangeOptions {
        count_only: true,
        ..Default::default()
    };
    mvcc.read()
        .range(KeyRange::new(prefix.as_bytes(), &end), opts)
        .unwrap()
        .count
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Starts the child installing the snapshot in `work` into `member`.
fn spawn_install(member: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "install_in_child", "--nocapture"])
        .env(CHILD_DIR, member)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Run by the child only: installs `../snapshot` (with `../meta`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_in_child() {
    let Some(member) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let work = member.parent().unwrap();
    let meta: Meta = bincode::deserialize(&std::fs::read(work.join("meta")).unwrap()).unwrap();
    let file = tokio::fs::File::open(work.join("snapshot")).await.unwrap();
    let (_mvcc, mut sm) = open(&member);
    sm.install_snapshot(&meta, Box::new(file)).await.unwrap();
    // No orderly shutdown: only what the install made durable counts.
    std::process::exit(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_during_an_install_has_the_old_state_or_the_whole_new_one() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // The leader's state and its snapshot.
    let new_applied = {
        let (_mvcc, mut sm) = open(&work.path().join("leader"));
        fill(&mut sm, "new/", NEW_KEYS).await;
        let snapshot = sm.build_snapshot().await.unwrap();
        let mut file = snapshot.snapshot.into_std().await;
        let mut copy = std::fs::File::create(work.path().join("snapshot")).unwrap();
        std::io::copy(&mut file, &mut copy).unwrap();
        let meta = bincode::serialize(&snapshot.meta).unwrap();
        std::fs::write(work.path().join("meta"), meta).unwrap();
        snapshot.meta.last_log_id
    };
    // The member's own, older state.
    let old_state = work.path().join("old");
    let old_applied = {
        let (mvcc, mut sm) = open(&old_state);
        let applied = fill(&mut sm, "old/", OLD_KEYS).await;
        mvcc.flush().unwrap();
        Some(applied)
    };
    // sled lets go of its files once every handle is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An install left alone, to learn how long one takes.
    let whole = work.path().join("whole");
    copy_dir(&old_state, &whole);
    let started = Instant::now();
    assert!(spawn_install(&whole).wait().unwrap().success());
    let duration = started.elapsed();

    let mut outcomes = Vec::new();
    for i in 1..=10u32 {
        let member = work.path().join(format!("killed-{i}"));
        copy_dir(&old_state, &member);
        let mut child = spawn_install(&member);
        std::thread::sleep(duration * i / 10);
        let _ = child.kill();
        child.wait().unwrap();

        let (mvcc, mut sm) = open(&member);
        let (applied, _) = sm.applied_state().await.unwrap();
        let (old, new) = (count(&mvcc, "old/"), count(&mvcc, "new/"));
        let outcome = if applied == old_applied {
            assert_eq!(
                (old, new),
                (OLD_KEYS as usize, 0),
                "kill {i}: old id, not old data"
            );
            "old"
        } else if applied == new_applied {
            assert_eq!(
                (old, new),
                (0, NEW_KEYS as usize),
                "kill {i}: new id, not new data"
            );
            "new"
        } else {
            panic!("kill {i}: applied {applied:?} is neither the old nor the new state's");
        };
        outcomes.push(outcome);
    }
    // Kills at the very end may land after the install; at least the
    // early ones must have cut it short.
    assert!(
        outcomes.contains(&"old"),
        "no kill interrupted the install: {outcomes:?}"
    );
}
