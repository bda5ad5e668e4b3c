use ferrocd_proto::mvccpb::KeyValue;

use super::*;

fn setup() -> (sled::Db, Arc<Mvcc>, Arc<WatchHub>) {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let mvcc = Arc::new(Mvcc::open(db.open_tree("state").unwrap()).unwrap());
    let hub = WatchHub::new(mvcc.clone(), 1 << 20);
    (db, mvcc, hub)
}

/// Puts `key` as one revision and notifies the hub, as apply does.
fn put(mvcc: &Mvcc, hub: &WatchHub, key: &str) -> i64 {
    let mut w = mvcc.write();
    w.begin();
    w.put(key.as_bytes(), b"v".to_vec(), 0);
    let (rev, events) = w.end().unwrap();
    w.commit().unwrap();
    hub.notify(rev, &events);
    rev
}

fn watch_req(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        range_end: end.into(),
        start_revision: start,
        ..Default::default()
    }
}

fn revisions(rx: &mut mpsc::Receiver<WatchResponse>) -> Vec<i64> {
    let mut revs = Vec::new();
    while let Ok(r) = rx.try_recv() {
        for e in &r.events {
            revs.push(e.kv.as_ref().map(|kv: &KeyValue| kv.mod_revision).unwrap());
        }
    }
    revs
}

#[tokio::test]
async fn synced_watcher_gets_live_events_in_its_range_only() {
    let (_db, mvcc, hub) = setup();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("a", "b", 0)).unwrap();
    stream.activate(id);
    put(&mvcc, &hub, "a1");
    put(&mvcc, &hub, "zz");
    put(&mvcc, &hub, "a2");
    assert_eq!(revisions(&mut rx), vec![2, 4]);
}

#[tokio::test]
async fn past_start_revision_replays_history_then_continues_live() {
    let (_db, mvcc, hub) = setup();
    for k in ["a", "b", "c"] {
        put(&mvcc, &hub, k);
    }
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("\0", "\0", 3)).unwrap();
    stream.activate(id);
    put(&mvcc, &hub, "d");
    hub.sync_unsynced();
    put(&mvcc, &hub, "e");
    assert_eq!(revisions(&mut rx), vec![3, 4, 5, 6]);
}

#[tokio::test]
async fn a_slow_stream_catches_up_without_gaps_or_duplicates() {
    let (_db, mvcc, hub) = setup();
    let (tx, mut rx) = mpsc::channel(2);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("k", "l", 0)).unwrap();
    stream.activate(id);
    let mut got = Vec::new();
    for i in 0..50 {
        put(&mvcc, &hub, &format!("k{i}"));
        if i % 7 == 0 {
            got.extend(revisions(&mut rx));
            hub.sync_unsynced();
        }
    }
    for _ in 0..100 {
        got.extend(revisions(&mut rx));
        hub.sync_unsynced();
    }
    got.extend(revisions(&mut rx));
    assert_eq!(got, (2..52).collect::<Vec<_>>());
}

#[tokio::test]
async fn compacted_start_revision_gets_the_compacted_response() {
    let (_db, mvcc, hub) = setup();
    for k in ["a", "b", "c"] {
        put(&mvcc, &hub, k);
    }
    let mut w = mvcc.write();
    w.compact(3).unwrap();
    w.commit().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("a", "", 2)).unwrap();
    stream.activate(id);
    hub.sync_unsynced();
    let r = rx.try_recv().unwrap();
    assert!(r.canceled);
    assert_eq!(r.compact_revision, 3);
    assert!(!stream.cancel(id), "the compacted watcher is gone");
}

#[tokio::test]
async fn progress_request_waits_until_synced() {
    let (_db, mvcc, hub) = setup();
    put(&mvcc, &hub, "a");
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("a", "", 1)).unwrap();
    stream.activate(id);
    stream.request_progress();
    assert!(
        rx.try_recv().is_err(),
        "not synced yet: no progress response"
    );
    hub.sync_unsynced();
    let events = rx.try_recv().unwrap();
    assert_eq!(events.events.len(), 1);
    let progress = rx.try_recv().unwrap();
    assert_eq!(
        (progress.watch_id, progress.header.unwrap().revision),
        (-1, 2)
    );
}

#[tokio::test]
async fn filters_and_prev_kv_apply() {
    let (_db, mvcc, hub) = setup();
    put(&mvcc, &hub, "a");
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let req = WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        prev_kv: true,
        ..watch_req("a", "", 0)
    };
    let (id, _) = stream.create(&req).unwrap();
    stream.activate(id);
    put(&mvcc, &hub, "a");
    let mut w = mvcc.write();
    w.begin();
    w.delete_range(KeyRange::new(b"a", b""));
    let (rev, events) = w.end().unwrap();
    w.commit().unwrap();
    hub.notify(rev, &events);
    let r = rx.try_recv().unwrap();
    assert_eq!(r.events[0].prev_kv.as_ref().unwrap().mod_revision, 2);
    assert!(rx.try_recv().is_err(), "the delete was filtered out");
}

#[test]
fn ids_are_assigned_per_stream_and_duplicates_refused() {
    let (_db, _mvcc, hub) = setup();
    let (tx, _rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    assert_eq!(stream.create(&watch_req("a", "", 0)).unwrap().0, 0);
    assert_eq!(stream.create(&watch_req("a", "", 0)).unwrap().0, 1);
    let chosen = WatchCreateRequest {
        watch_id: 7,
        ..watch_req("a", "", 0)
    };
    assert_eq!(stream.create(&chosen).unwrap().0, 7);
    assert_eq!(
        stream.create(&chosen).unwrap_err().1,
        CreateError::DuplicateId
    );
    assert_eq!(
        stream.create(&watch_req("b", "a", 0)).unwrap_err().1,
        CreateError::EmptyRange
    );
}
