//! A member that led before a restart comes back as a follower: the vote
//! it finds is its own, no longer committed, in the same term.

use ferrocd::raft::LogStore;
use openraft::storage::RaftLogStorage;
use openraft::Vote;

#[tokio::test]
async fn a_former_leader_comes_back_without_its_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path().join("raft"))
        .open()
        .unwrap();
    let mut log = LogStore::open(&db, &dir.path().join("wal")).unwrap();
    let mut led = Vote::new(7, 3);
    led.commit();
    log.save_vote(&led).await.unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(led));

    log.step_down().unwrap();
    let after = log.read_vote().await.unwrap().expect("a vote");
    assert!(!after.committed, "still a leader's vote: {after}");
    assert_eq!(
        after.leader_id, led.leader_id,
        "the term and candidate are kept"
    );
    // A vote that was never committed stays as it is.
    log.step_down().unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(after));
}
