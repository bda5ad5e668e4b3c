use ferrocd_proto::mvccpb::KeyValue;

use ferrocd_proto::etcdserverpb::WatchResponse;
use tokio::sync::mpsc::error::TryRecvError;

use super::*;

/// The next queued response as the client decodes it.
fn try_recv(rx: &mut mpsc::Receiver<Outgoing>) -> Result<WatchResponse, TryRecvError> {
    rx.try_recv().map(|out| out.decoded())
}

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
    hub.notify(&[(rev, events)]);
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

fn revisions(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<i64> {
    let mut revs = Vec::new();
    while let Ok(r) = try_recv(rx) {
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
    let chosen = WatchCreateRequest {
        watch_id: 5,
        ..watch_req("a", "", 2)
    };
    let (id, _) = stream.create(&chosen).unwrap();
    stream.activate(id);
    hub.sync_unsynced();
    let r = try_recv(&mut rx).unwrap();
    assert!(r.canceled);
    assert_eq!(r.compact_revision, 3);
    // As in etcd, the id stays taken until the client cancels it.
    let reuse = WatchCreateRequest {
        watch_id: id,
        ..watch_req("x", "", 0)
    };
    assert_eq!(
        stream.create(&reuse).unwrap_err().1,
        CreateError::DuplicateId
    );
    put(&mvcc, &hub, "a");
    hub.sync_unsynced();
    assert!(
        try_recv(&mut rx).is_err(),
        "a compacted watcher gets nothing more"
    );
    stream.request_progress();
    let progress = try_recv(&mut rx).unwrap();
    assert_eq!(
        progress.watch_id, -1,
        "a compacted watcher counts as synced"
    );
    assert!(stream.cancel(id), "cancel is answered");
    assert_eq!(stream.create(&reuse).unwrap().0, id);
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
        try_recv(&mut rx).is_err(),
        "not synced yet: no progress response"
    );
    hub.sync_unsynced();
    let events = try_recv(&mut rx).unwrap();
    assert_eq!(events.events.len(), 1);
    let progress = try_recv(&mut rx).unwrap();
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
    hub.notify(&[(rev, events)]);
    let r = try_recv(&mut rx).unwrap();
    assert_eq!(r.events[0].prev_kv.as_ref().unwrap().mod_revision, 2);
    assert!(try_recv(&mut rx).is_err(), "the delete was filtered out");
}

#[tokio::test]
async fn each_event_is_encoded_once_for_all_watchers_that_select_it() {
    let (_db, mvcc, hub) = setup();
    put(&mvcc, &hub, "a");
    let mut streams = Vec::new();
    let mut receivers = Vec::new();
    for prev_kv in [false, false, true, true] {
        let (tx, rx) = mpsc::channel(16);
        let stream = hub.open_stream(tx);
        let req = WatchCreateRequest {
            prev_kv,
            ..watch_req("a", "c", 0)
        };
        let (id, _) = stream.create(&req).unwrap();
        stream.activate(id);
        streams.push(stream);
        receivers.push(rx);
    }
    let mut w = mvcc.write();
    w.begin();
    w.put(b"a", b"v2".to_vec(), 0);
    w.put(b"b", b"v".to_vec(), 0);
    let (rev, events) = w.end().unwrap();
    w.commit().unwrap();
    hub.notify(&[(rev, events)]);
    let got: Vec<Outgoing> = receivers
        .iter_mut()
        .map(|rx| rx.try_recv().unwrap())
        .collect();
    let shared = |x: &Outgoing, y: &Outgoing| {
        x.events.len() == 2
            && y.events.len() == 2
            && x.events
                .iter()
                .zip(&y.events)
                .all(|(a, b)| a.as_ptr() == b.as_ptr())
    };
    assert!(shared(&got[0], &got[1]), "plain watchers share the bytes");
    assert!(shared(&got[2], &got[3]), "prev_kv watchers share theirs");
    assert!(!shared(&got[0], &got[2]), "with and without prev_kv differ");
    for (i, out) in got.iter().enumerate() {
        let r = out.decoded();
        let keys: Vec<&[u8]> = r
            .events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().key.as_slice())
            .collect();
        assert_eq!(keys, [b"a".as_slice(), b"b"]);
        assert!(r
            .events
            .iter()
            .all(|e| e.kv.as_ref().unwrap().mod_revision == rev));
        let prev: Vec<Option<i64>> = r
            .events
            .iter()
            .map(|e| e.prev_kv.as_ref().map(|kv| kv.mod_revision))
            .collect();
        let want = if i < 2 {
            vec![None, None]
        } else {
            vec![Some(2), None]
        };
        assert_eq!(prev, want, "watcher {i}");
    }
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

#[tokio::test]
async fn future_start_revision_skips_earlier_live_events() {
    let (_db, mvcc, hub) = setup();
    put(&mvcc, &hub, "f");
    let now = mvcc.current_revision();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("f", "", now + 3)).unwrap();
    stream.activate(id);
    for _ in 0..5 {
        put(&mvcc, &hub, "f");
    }
    hub.sync_unsynced();
    assert_eq!(revisions(&mut rx), vec![now + 3, now + 4, now + 5]);
}

#[tokio::test]
async fn revision_committed_before_create_but_notified_after_is_not_delivered() {
    let (_db, mvcc, hub) = setup();
    // Apply commits a revision; the hub hears of it only later.
    let mut w = mvcc.write();
    w.begin();
    w.put(b"a", b"v".to_vec(), 0);
    let (rev, events) = w.end().unwrap();
    w.commit().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    // "From now": the created revision already includes `rev`.
    let (id, created_rev) = stream.create(&watch_req("a", "", 0)).unwrap();
    assert_eq!(created_rev, rev);
    stream.activate(id);
    hub.notify(&[(rev, events)]);
    let next = put(&mvcc, &hub, "a");
    hub.sync_unsynced();
    assert_eq!(revisions(&mut rx), vec![next]);
}

#[tokio::test]
async fn restore_keeps_a_future_start_revision() {
    let (_db, mvcc, hub) = setup();
    put(&mvcc, &hub, "a");
    let now = mvcc.current_revision();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("a", "", now + 3)).unwrap();
    stream.activate(id);
    put(&mvcc, &hub, "a");
    hub.restored();
    hub.sync_unsynced();
    for _ in 0..3 {
        put(&mvcc, &hub, "a");
        hub.sync_unsynced();
    }
    assert_eq!(revisions(&mut rx), vec![now + 3, now + 4]);
}

/// Deletes `key` as one revision and notifies the hub.
fn delete(mvcc: &Mvcc, hub: &WatchHub, key: &str) -> i64 {
    let mut w = mvcc.write();
    w.begin();
    w.delete_range(KeyRange::new(key.as_bytes(), b""));
    let (rev, events) = w.end().unwrap();
    w.commit().unwrap();
    hub.notify(&[(rev, events)]);
    rev
}

/// Runs catch-up passes until `rx` gets nothing more; the responses' event
/// revisions, one list per response.
fn responses_after_sync(hub: &WatchHub, rx: &mut mpsc::Receiver<Outgoing>) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for _ in 0..20 {
        hub.sync_unsynced();
        while let Ok(r) = try_recv(rx) {
            if !r.events.is_empty() {
                out.push(
                    r.events
                        .iter()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision)
                        .collect(),
                );
            }
        }
    }
    out
}

#[tokio::test]
async fn catch_up_responses_hold_at_most_1000_revisions_of_the_watchers_events() {
    let (_db, mvcc, hub) = setup();
    let mut narrow = Vec::new();
    let mut deletes = Vec::new();
    for i in 0..1300 {
        put(&mvcc, &hub, &format!("w{}", i % 50));
        if i == 300 || i == 1200 {
            narrow.push(put(&mvcc, &hub, "n"));
            deletes.push(delete(&mvcc, &hub, "w7"));
        }
    }
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let wide = stream.create(&watch_req("w", "x", 2)).unwrap().0;
    stream.activate(wide);
    let batches = responses_after_sync(&hub, &mut rx);
    // Every revision from 2 on, except the puts of "n": 1000 per response.
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1000, 1300 + deletes.len() - 1000]);
    assert_eq!(batches.concat().len(), 1300 + deletes.len());

    // A narrow watcher gets its few events in one response, however many
    // store revisions they span.
    let id = stream.create(&watch_req("n", "", 2)).unwrap().0;
    stream.activate(id);
    assert_eq!(responses_after_sync(&hub, &mut rx), vec![narrow]);

    // Filters apply after the batch is cut, as in etcd: the deletes are
    // counted among the 1000 revisions of each batch, and each batch
    // shows only its deletes.
    let req = WatchCreateRequest {
        filters: vec![FilterType::Noput as i32],
        ..watch_req("w", "x", 2)
    };
    let id = stream.create(&req).unwrap().0;
    stream.activate(id);
    let got = responses_after_sync(&hub, &mut rx);
    let first_batch_end = batches[0].last().copied().unwrap();
    let expected: Vec<Vec<i64>> = [
        deletes
            .iter()
            .copied()
            .filter(|&r| r <= first_batch_end)
            .collect::<Vec<_>>(),
        deletes
            .iter()
            .copied()
            .filter(|&r| r > first_batch_end)
            .collect(),
    ]
    .into_iter()
    .filter(|b| !b.is_empty())
    .collect();
    assert_eq!(got, expected);
    assert_eq!(expected.len(), 2, "the deletes fall in both batches");
}

#[tokio::test]
async fn periodic_progress_skips_watchers_sent_events_since_the_last_tick() {
    let (_db, mvcc, hub) = setup();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let req = WatchCreateRequest {
        progress_notify: true,
        ..watch_req("a", "", 0)
    };
    let (id, _) = stream.create(&req).unwrap();
    stream.activate(id);
    let quiet = stream.create(&watch_req("a", "", 0)).unwrap().0;
    stream.activate(quiet);
    let drain = |rx: &mut mpsc::Receiver<Outgoing>| {
        let mut got = Vec::new();
        while let Ok(r) = try_recv(rx) {
            got.push((r.watch_id, r.events.len(), r.header.unwrap().revision));
        }
        got
    };

    // Nothing happened: a notification at the current revision, only to
    // the watcher that asked.
    hub.send_progress_notifications();
    assert_eq!(drain(&mut rx), vec![(id, 0, 1)]);
    // Events since the last tick: no notification this tick ...
    let rev = put(&mvcc, &hub, "a");
    drain(&mut rx);
    hub.send_progress_notifications();
    assert_eq!(drain(&mut rx), vec![]);
    // ... and one at the next.
    hub.send_progress_notifications();
    assert_eq!(drain(&mut rx), vec![(id, 0, rev)]);
}

/// Puts each of `keys` (values of `size` bytes) as its own revision in one
/// write, and notifies the hub of them together, as apply does for one
/// batch of requests. Returns their revisions.
fn put_batch(mvcc: &Mvcc, hub: &WatchHub, keys: &[&str], size: usize) -> Vec<i64> {
    let mut w = mvcc.write();
    let mut changes = Vec::new();
    for k in keys {
        w.begin();
        w.put(k.as_bytes(), vec![b'v'; size], 0);
        changes.extend(w.end());
    }
    w.commit().unwrap();
    hub.notify(&changes);
    changes.iter().map(|(rev, _)| *rev).collect()
}

/// Every queued response as (header revision, event revisions).
fn responses(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<(i64, Vec<i64>)> {
    let mut out = Vec::new();
    while let Ok(r) = try_recv(rx) {
        let revs = r
            .events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        out.push((r.header.unwrap().revision, revs));
    }
    out
}

#[tokio::test]
async fn a_batch_of_revisions_reaches_each_watcher_in_one_response() {
    let (_db, mvcc, hub) = setup();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (a, _) = stream.create(&watch_req("a", "b", 0)).unwrap();
    stream.activate(a);
    let (all, _) = stream.create(&watch_req("\0", "\0", 0)).unwrap();
    stream.activate(all);
    let revs = put_batch(&mvcc, &hub, &["a1", "z", "a2", "y"], 8);
    assert_eq!(revs, vec![2, 3, 4, 5]);
    let mut got = Vec::new();
    while let Ok(r) = try_recv(&mut rx) {
        let events: Vec<i64> = r
            .events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        got.push((r.watch_id, r.header.unwrap().revision, events));
    }
    got.sort();
    // The header is at the batch's last revision, as in a catch-up response.
    assert_eq!(got, vec![(a, 5, vec![2, 4]), (all, 5, vec![2, 3, 4, 5])]);
}

#[tokio::test]
async fn a_watcher_starting_inside_a_batch_gets_only_its_revisions() {
    let (_db, mvcc, hub) = setup();
    let (tx, mut rx) = mpsc::channel(16);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("\0", "\0", 4)).unwrap();
    stream.activate(id);
    put_batch(&mvcc, &hub, &["a", "b", "c", "d"], 8);
    assert_eq!(responses(&mut rx), vec![(5, vec![4, 5])]);
}

#[tokio::test]
async fn a_large_batch_is_cut_between_revisions_without_loss() {
    let (_db, mvcc, hub) = setup();
    let (tx, mut rx) = mpsc::channel(64);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("\0", "\0", 0)).unwrap();
    stream.activate(id);
    let names: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    let keys: Vec<&str> = names.iter().map(String::as_str).collect();
    // 40 revisions of ~5 KiB events: about three cuts at 64 KiB.
    let revs = put_batch(&mvcc, &hub, &keys, 5000);
    let got = responses(&mut rx);
    assert!(got.len() >= 3, "one response per 64 KiB: {got:?}");
    for (header, events) in &got {
        assert_eq!(
            events.last(),
            Some(header),
            "header at the last revision it covers"
        );
    }
    let delivered: Vec<i64> = got.into_iter().flat_map(|(_, e)| e).collect();
    assert_eq!(delivered, revs);
}

#[tokio::test]
async fn a_full_queue_during_a_batch_resumes_at_the_batch_start() {
    let (_db, mvcc, hub) = setup();
    let (tx, mut rx) = mpsc::channel(1);
    let stream = hub.open_stream(tx);
    let (id, _) = stream.create(&watch_req("\0", "\0", 0)).unwrap();
    stream.activate(id);
    let first = put_batch(&mvcc, &hub, &["a", "b"], 8);
    // The queue is full: this batch demotes the watcher.
    let second = put_batch(&mvcc, &hub, &["c", "d", "e"], 8);
    let mut delivered: Vec<i64> = revisions(&mut rx);
    for _ in 0..5 {
        hub.sync_unsynced();
        delivered.extend(revisions(&mut rx));
    }
    let all: Vec<i64> = first.into_iter().chain(second).collect();
    assert_eq!(delivered, all);
}
