//! The watches of a fault run and etcd's watch guarantees checked against
//! the recorded history: one watch of every key from revision 2, and
//! watches started during the run from revisions chosen among those
//! already written. Each asks for progress notifications; a notification
//! at revision R promises that every event up to R was already delivered.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};

use super::workload::connect;
use super::Rng;
use crate::linearizability::{Input, Operation, Output};

/// One watch event: (revision, key, value, is_delete).
pub type Event = (i64, String, String, bool);

/// What one watch received.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    /// The revision it asked to start from.
    pub from: i64,
    /// The events, in the order they came.
    pub events: Vec<Event>,
    /// Progress notifications: (how many events had come before it, its
    /// revision).
    pub progress: Vec<(usize, i64)>,
    /// Watches the server canceled (there is no compaction in a run, so
    /// none should be).
    pub canceled: Vec<String>,
}

impl WatchLog {
    /// The highest revision the watch is known to have seen everything up
    /// to: its last event's, or a later progress notification's.
    pub fn seen_until(&self) -> i64 {
        let last_event = self.events.last().map_or(0, |e| e.0);
        let last_progress = self.progress.iter().map(|p| p.1).max().unwrap_or(0);
        last_event.max(last_progress)
    }
}

/// Watches every key from revision `from` until `stop`, starting on member
/// `first` and moving to the next (resuming after the last revision seen)
/// when one fails.
pub(super) async fn watch_from(
    urls: Vec<String>,
    from: i64,
    first: usize,
    stop: Arc<AtomicBool>,
) -> WatchLog {
    let mut log = WatchLog {
        from,
        ..WatchLog::default()
    };
    let mut member = first % urls.len();
    let mut idle_after_stop = 0;
    let mut stopped_at: Option<Instant> = None;
    loop {
        let resume = log.events.last().map_or(from, |e| e.0 + 1);
        let Some(channel) = connect(&urls[member]).await else {
            member = (member + 1) % urls.len();
            if stop.load(Ordering::SeqCst) {
                idle_after_stop += 1;
                if idle_after_stop > 20 {
                    return log;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut client = WatchClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                start_revision: resume,
                progress_notify: true,
                ..Default::default()
            })),
        };
        let _ = tx.send(create).await;
        let stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let Ok(stream) = stream else {
            member = (member + 1) % urls.len();
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            // Once the clients stopped, what is left arrives within a
            // second or two (progress notifications keep coming); then the
            // watch is over.
            if stop.load(Ordering::SeqCst) {
                let stopped = *stopped_at.get_or_insert_with(Instant::now);
                if stopped.elapsed() > Duration::from_secs(2) {
                    return log;
                }
            }
            match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    if resp.canceled {
                        log.canceled.push(format!(
                            "watch from {resume} on {} canceled: {:?} (compact revision {})",
                            urls[member], resp.cancel_reason, resp.compact_revision
                        ));
                        break;
                    }
                    if resp.events.is_empty() && !resp.created {
                        let revision = resp.header.map_or(0, |h| h.revision);
                        log.progress.push((log.events.len(), revision));
                    }
                    for e in resp.events {
                        let kv = e.kv.unwrap_or_default();
                        log.events.push((
                            kv.mod_revision,
                            String::from_utf8_lossy(&kv.key).to_string(),
                            String::from_utf8_lossy(&kv.value).to_string(),
                            e.r#type == 1,
                        ));
                    }
                }
                Ok(_) => break,
                Err(_) if stop.load(Ordering::SeqCst) => {
                    drop(tx);
                    return log;
                }
                Err(_) => break,
            }
        }
        drop(tx);
        member = (member + 1) % urls.len();
    }
}

/// Starts, every 300-900 ms until `stop`, up to `count` watches from
/// revisions chosen among those acknowledged so far, each on a member of
/// its own; returns their logs once `stop` ends them.
pub(super) async fn watch_from_chosen_revisions(
    urls: Vec<String>,
    seed: u64,
    count: usize,
    history: Arc<Mutex<Vec<Operation>>>,
    stop: Arc<AtomicBool>,
) -> Vec<WatchLog> {
    let mut rng = Rng(seed ^ 0x3a7c);
    let mut watches = Vec::new();
    while watches.len() < count && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(600))).await;
        let highest = history
            .lock()
            .unwrap()
            .iter()
            .filter_map(|o| o.ret.as_ref().map(|(_, out)| out.revision()))
            .max()
            .unwrap_or(1);
        let from = 2 + rng.below(highest.max(2) as u64 - 1) as i64;
        let member = rng.below(urls.len() as u64) as usize;
        watches.push(tokio::spawn(watch_from(
            urls.clone(),
            from,
            member,
            stop.clone(),
        )));
    }
    let mut logs = Vec::new();
    for w in watches {
        if let Ok(log) = w.await {
            logs.push(log);
        }
    }
    logs
}

/// The acknowledged writes of `history`: (revision, key, value, is_delete).
fn acknowledged_writes(history: &[Operation]) -> Vec<Event> {
    history
        .iter()
        .filter_map(|op| {
            let (_, out) = op.ret.as_ref()?;
            match (&op.input, out) {
                (Input::Put { key, value }, Output::Put { revision })
                | (Input::PutLeased { key, value, .. }, Output::Put { revision })
                | (
                    Input::PutIf { key, value, .. },
                    Output::PutIf {
                        succeeded: true,
                        revision,
                    },
                ) => Some((*revision, key.clone(), value.clone(), false)),
                (
                    Input::Delete { key },
                    Output::Delete {
                        deleted: 1,
                        revision,
                    },
                ) => Some((*revision, key.clone(), String::new(), true)),
                _ => None,
            }
        })
        .collect()
}

/// etcd's watch guarantees for one watch against the history: events come
/// in revision order and never twice (ordered, unique), none before the
/// revision asked for, every acknowledged write from there on is among them
/// with its value (reliable), every event is a write some client made (no
/// invented events), and a progress notification at revision R comes after
/// every acknowledged write up to R and before every event after R.
pub fn check_watch(history: &[Operation], log: &WatchLog) -> Vec<String> {
    let events = &log.events;
    let mut problems: Vec<String> = log.canceled.clone();
    for w in events.windows(2) {
        if w[1].0 < w[0].0 {
            problems.push(format!("event at revision {} after {}", w[1].0, w[0].0));
        }
        if w[1] == w[0] {
            problems.push(format!("event {:?} delivered twice", w[1]));
        }
    }
    if let Some(first) = events.first().filter(|e| e.0 < log.from) {
        problems.push(format!(
            "watch from revision {} delivered {first:?}",
            log.from
        ));
    }
    let delivered = |e: &Event, among: &[Event]| {
        among
            .iter()
            .any(|d| d.0 == e.0 && d.1 == e.1 && d.3 == e.3 && (e.3 || d.2 == e.2))
    };
    let writes = acknowledged_writes(history);
    let seen_until = log.seen_until();
    for w in writes
        .iter()
        .filter(|w| w.0 >= log.from && w.0 <= seen_until)
    {
        if !delivered(w, events) {
            problems.push(format!(
                "acknowledged write {w:?} missing from the watch from {}",
                log.from
            ));
        }
    }
    for &(before, revision) in &log.progress {
        if let Some(late) = events[before..].iter().find(|e| e.0 <= revision) {
            problems.push(format!(
                "progress notification at revision {revision} came before event {late:?}"
            ));
        }
    }
    let written: HashSet<&str> = history
        .iter()
        .filter_map(|o| match &o.input {
            Input::Put { value, .. }
            | Input::PutIf { value, .. }
            | Input::PutLeased { value, .. } => Some(value.as_str()),
            _ => None,
        })
        .collect();
    for e in events {
        if !e.3 && !written.contains(e.2.as_str()) {
            problems.push(format!("event {e:?} is no client's write"));
        }
    }
    problems
}

/// Watches started at different revisions agree: where two saw the same
/// revision, they saw the same events (unacknowledged writes included,
/// which the history alone cannot check).
pub fn check_agreement(reference: &WatchLog, others: &[WatchLog]) -> Vec<String> {
    let by_revision = |log: &WatchLog| -> BTreeMap<i64, Vec<Event>> {
        log.events.iter().fold(BTreeMap::new(), |mut m, e| {
            m.entry(e.0).or_default().push(e.clone());
            m
        })
    };
    let reference_events = by_revision(reference);
    let mut problems = Vec::new();
    for other in others {
        let until = reference.seen_until().min(other.seen_until());
        for (revision, events) in by_revision(other) {
            if revision > until {
                break;
            }
            let expected = reference_events.get(&revision).cloned().unwrap_or_default();
            if events != expected {
                problems.push(format!(
                    "watch from {} saw {events:?} at revision {revision}, watch from {} saw {expected:?}",
                    other.from, reference.from
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, revision: i64) -> Operation {
        Operation {
            client: 0,
            input: Input::Put {
                key: key.into(),
                value: value.into(),
            },
            call: 0,
            ret: Some((1, Output::Put { revision })),
        }
    }

    fn event(revision: i64, key: &str, value: &str) -> Event {
        (revision, key.into(), value.into(), false)
    }

    fn log(from: i64, events: &[Event], progress: &[(usize, i64)]) -> WatchLog {
        WatchLog {
            from,
            events: events.to_vec(),
            progress: progress.to_vec(),
            canceled: Vec::new(),
        }
    }

    #[test]
    fn a_faithful_watch_passes() {
        let h = [put("a", "1", 2), put("b", "2", 3)];
        let events = [event(2, "a", "1"), event(3, "b", "2")];
        assert!(check_watch(&h, &log(2, &events, &[(1, 2), (2, 3)])).is_empty());
        assert!(check_watch(&h, &log(3, &events[1..], &[(0, 2), (1, 3)])).is_empty());
    }

    #[test]
    fn a_reordered_a_duplicated_and_a_missing_event_are_found() {
        let h = [put("a", "1", 2), put("b", "2", 3), put("c", "3", 4)];
        let found = |events: &[Event], what: &str| {
            check_watch(&h, &log(2, events, &[]))
                .iter()
                .any(|p| p.contains(what))
        };
        assert!(found(&[event(3, "b", "2"), event(2, "a", "1")], "after"));
        let twice = [event(2, "a", "1"), event(2, "a", "1"), event(3, "b", "2")];
        assert!(found(&twice, "twice"));
        assert!(found(&[event(2, "a", "1"), event(4, "c", "3")], "missing"));
        let invented = [event(2, "a", "zzz")];
        assert!(!check_watch(&h[..1], &log(2, &invented, &[])).is_empty());
    }

    #[test]
    fn an_event_before_the_start_and_a_canceled_watch_are_found() {
        let h = [put("a", "1", 2), put("b", "2", 3)];
        let early = check_watch(&h, &log(3, &[event(2, "a", "1"), event(3, "b", "2")], &[]));
        assert!(
            early.iter().any(|p| p.contains("from revision 3")),
            "{early:?}"
        );
        let mut canceled = log(2, &[event(2, "a", "1")], &[]);
        canceled.canceled.push("canceled".into());
        assert!(!check_watch(&h, &canceled).is_empty());
    }

    #[test]
    fn a_progress_notification_ahead_of_its_events_is_found() {
        let h = [put("a", "1", 2), put("b", "2", 3)];
        let events = [event(2, "a", "1"), event(3, "b", "2")];
        // Progress at 3 after only the first event: the second came late.
        let early = check_watch(&h, &log(2, &events, &[(1, 3)]));
        assert!(early.iter().any(|p| p.contains("came before")), "{early:?}");
        // Progress at 3 with the write at 3 never delivered at all.
        let lost = check_watch(&h, &log(2, &events[..1], &[(1, 3)]));
        assert!(lost.iter().any(|p| p.contains("missing")), "{lost:?}");
    }

    #[test]
    fn watches_that_disagree_on_a_revision_are_found() {
        let all = log(2, &[event(2, "a", "1"), event(3, "b", "2")], &[]);
        let same = log(3, &[event(3, "b", "2")], &[]);
        assert!(check_agreement(&all, &[same]).is_empty());
        let other = log(3, &[event(3, "b", "9")], &[]);
        assert_eq!(check_agreement(&all, &[other]).len(), 1);
    }
}
