//! openraft's own storage test suite against ferrocd's log store (segment
//! files plus metadata) and state machine (MVCC on sled, snapshot files).

use std::sync::Arc;
use std::time::Duration;

use ferrocd::auth::AuthStore;
use ferrocd::lease::Lessor;
use ferrocd::mvcc::Mvcc;
use ferrocd::raft::{Backend, LogStore, StateMachine, TypeConfig};
use ferrocd::watch::WatchHub;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = |name: &str| {
            sled::Config::new()
                .path(dir.path().join(name))
                .open()
                .expect("sled")
        };
        let (db, meta) = (open("db"), open("raft"));
        let backend = Arc::new(Backend::open(&db, &dir.path().join("snap")).expect("backend"));
        let mvcc = Arc::new(Mvcc::open(backend.state_tree().expect("tree")).expect("mvcc"));
        let lessor = Arc::new(Lessor::new(Lessor::min_ttl_for(Duration::from_secs(1))));
        let hub = WatchHub::new(mvcc.clone(), 1 << 20);
        let auth = Arc::new(AuthStore::new(Duration::from_secs(300)));
        let alarms = Arc::new(ferrocd::alarm::Alarms::new());
        let sm = StateMachine::new(mvcc, lessor, auth, alarms, hub, backend);
        let log = LogStore::open(&meta, &dir.path().join("wal"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).unwrap();
}
