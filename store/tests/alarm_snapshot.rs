//! Alarms are applied state: they travel in raft snapshots, so a member
//! brought up to date by a snapshot refuses what the cluster refuses.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrocd::alarm::Alarms;
use ferrocd::auth::AuthStore;
use ferrocd::lease::Lessor;
use ferrocd::mvcc::Mvcc;
use ferrocd::raft::{Backend, LogId, Request, Response, StateMachine, TypeConfig};
use ferrocd::watch::WatchHub;
use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::{AlarmRequest, AlarmType, PutRequest};
use ferrocd_proto::ferrocdpb::{internal_request, InternalRequest};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, RaftSnapshotBuilder};

fn open(dir: &Path) -> (Arc<Alarms>, StateMachine) {
    let db = sled::Config::new().path(dir.join("db")).open().unwrap();
    let backend = Arc::new(Backend::open(&db, &dir.join("snap")).unwrap());
    let mvcc = Arc::new(Mvcc::open(backend.state_tree().unwrap()).unwrap());
    let lessor = Arc::new(Lessor::new(Lessor::min_ttl_for(Duration::from_secs(1))));
    let hub = WatchHub::new(mvcc.clone(), 1 << 20);
    let auth = Arc::new(AuthStore::new(Duration::from_secs(300)));
    let alarms = Arc::new(Alarms::new());
    let sm = StateMachine::new(mvcc, lessor, auth, alarms.clone(), hub, backend);
    (alarms, sm)
}

fn entry(index: u64, request: internal_request::Request) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::single(InternalRequest {
            id: index,
            request: Some(request),
            ..Default::default()
        })),
    }
}

fn put(key: &str) -> internal_request::Request {
    internal_request::Request::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_member_installing_a_snapshot_gets_its_alarms() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, mut a) = open(a_dir.path());
    let raise = internal_request::Request::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: 7,
        alarm: AlarmType::Nospace as i32,
    });
    a.apply(vec![entry(1, put("before")), entry(2, raise)])
        .await
        .unwrap();
    let snapshot = a.build_snapshot().await.unwrap();

    let (alarms, mut b) = open(b_dir.path());
    assert!(!alarms.is_active(AlarmType::Nospace));
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert!(alarms.is_active(AlarmType::Nospace));
    let applied = b.apply(vec![entry(3, put("after"))]).await.unwrap();
    assert_eq!(
        applied,
        vec![vec![Response::Failed(ferrocd::kv::KvError::NoSpace)]]
    );
}
