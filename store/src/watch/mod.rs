//! The watch hub: fans the events of every applied revision out to
//! watchers, never blocking apply and never losing or repeating an event.
//!
//! As in etcd's watchable store, watchers are either *synced* (they have
//! everything up to the last notified revision and receive new events
//! live) or *unsynced* (behind: a new watcher with a past start revision,
//! or one whose stream was too slow to take a live event). A background
//! task catches unsynced watchers up from MVCC history and moves them back.
//! Each client stream has one bounded queue, so memory stays bounded: a
//! full queue demotes the watcher instead of growing.

mod response;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::etcdserverpb::WatchCreateRequest;
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::mvccpb::Event;
use prost::bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::mvcc::{KeyRange, Mvcc, MvccError};
pub use response::{canceled, created, fragments, header_at, Outgoing};
pub use task::MIN_PROGRESS_INTERVAL;

/// Messages queued to a client stream, in order.
pub type Outbound = mpsc::Sender<Outgoing>;

/// At most this many distinct revisions of events go in one catch-up
/// response (etcd's `watchBatchMaxRevs`); the rest follow in later ones.
const BATCH_REVS: usize = 1000;
/// Store revisions read from history per read while catching up.
const SCAN_REVS: i64 = 1000;
/// A live response to one watcher takes the events of further revisions of
/// the same applied batch until it holds this many bytes of events.
const COALESCE_BYTES: usize = 64 * 1024;
/// How often unsynced watchers are retried when nothing wakes the syncer.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Why a watch could not be created; the text goes in `cancel_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Created but its `created` response may not be queued yet: receives nothing.
    Pending,
    /// Has every event up to the hub's notified revision.
    Synced,
    /// Needs history from `next_rev` on.
    Unsynced,
    /// Its start revision was compacted away and the client was told so.
    /// As in etcd, the id stays taken on the stream (a create reusing it is
    /// a duplicate, a cancel is answered) until the client cancels it; it
    /// receives nothing more.
    Compacted,
}

#[derive(Clone)]
struct Watcher {
    key: Vec<u8>,
    end: Vec<u8>,
    /// First revision not yet queued. Once synced, the first revision the
    /// watcher may receive: live events below it are not its own (a start
    /// revision in the future, or a revision committed before the watch
    /// was created but not yet notified).
    next_rev: i64,
    phase: Phase,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Events were queued since the last periodic progress tick: as in
    /// etcd, the next tick sends this watcher no progress notification.
    sent_since_tick: bool,
}

impl Watcher {
    fn range(&self) -> KeyRange<'_> {
        KeyRange::new(&self.key, &self.end)
    }

    /// The events of `events` this watcher wants, encoded, with previous
    /// values if asked.
    fn select(&self, events: &[Event], encoded: &mut Encoded<'_>) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.select_into(events, encoded, &mut out);
        out
    }

    /// [`Watcher::select`], appending to `out`; returns the bytes appended.
    fn select_into(
        &self,
        events: &[Event],
        encoded: &mut Encoded<'_>,
        out: &mut Vec<Bytes>,
    ) -> usize {
        let range = self.range();
        let mut bytes = 0;
        for (i, e) in events.iter().enumerate() {
            if !e.kv.as_ref().is_some_and(|kv| range.contains(&kv.key)) {
                continue;
            }
            let put = e.r#type == EventType::Put as i32;
            if put && self.no_put || !put && self.no_delete {
                continue;
            }
            let field = encoded.get(i, e, self.prev_kv);
            bytes += field.len();
            out.push(field);
        }
        bytes
    }
}

/// A batch of events encoded for sending, each at most once without and
/// once with its previous value however many watchers select it; previous
/// values are read only for events a watcher asking for them selects.
struct Encoded<'a> {
    mvcc: &'a Mvcc,
    view: Option<crate::mvcc::ReadTxn<'a>>,
    events: usize,
    plain: Vec<Option<Bytes>>,
    with_prev: Vec<Option<Bytes>>,
}

impl<'a> Encoded<'a> {
    /// Slots for `events` events, allocated once the first is encoded: most
    /// revisions of a busy store are selected by no watcher.
    fn new(mvcc: &'a Mvcc, events: usize) -> Self {
        Encoded {
            mvcc,
            view: None,
            events,
            plain: Vec::new(),
            with_prev: Vec::new(),
        }
    }

    /// Event `i` of the batch, `e`, encoded, with its previous value if
    /// `prev_kv`.
    fn get(&mut self, i: usize, e: &Event, prev_kv: bool) -> Bytes {
        let Encoded {
            mvcc,
            view,
            events,
            plain,
            with_prev,
        } = self;
        let mvcc: &'a Mvcc = mvcc;
        let slots = if prev_kv { with_prev } else { plain };
        if slots.is_empty() {
            slots.resize(*events, None);
        }
        let slot = &mut slots[i];
        if let Some(known) = slot {
            return known.clone();
        }
        let bytes = if prev_kv {
            let prev = e.kv.as_ref().and_then(|kv| {
                let view = view.get_or_insert_with(|| mvcc.read());
                view.get_at(&kv.key, kv.mod_revision - 1)
            });
            response::encode_event(&Event {
                prev_kv: prev,
                ..e.clone()
            })
        } else {
            response::encode_event(e)
        };
        *slot = Some(bytes.clone());
        bytes
    }
}

struct Stream {
    tx: Outbound,
    /// Next id to hand out when the client lets the server choose.
    next_id: i64,
    /// A progress request waiting for every watcher of the stream to sync.
    progress_pending: bool,
}

struct State {
    /// The last revision whose events were handed to synced watchers.
    notified: i64,
    streams: HashMap<u64, Stream>,
    watchers: HashMap<(u64, i64), Watcher>,
    next_stream: u64,
}

/// The hub. Shared by the state machine (which notifies it) and the Watch
/// service (which registers watchers).
pub struct WatchHub {
    mvcc: Arc<Mvcc>,
    state: Mutex<State>,
    wake: Notify,
    /// Responses of watchers that asked for fragments are split from this
    /// size on (`--max-request-bytes` plus etcd's allowance for gRPC
    /// overhead).
    fragment_bytes: usize,
}

/// A client stream's registration; dropping it removes its watchers.
pub struct StreamHandle {
    hub: Arc<WatchHub>,
    id: u64,
}

impl WatchHub {
    /// A hub over `mvcc`; `max_request_bytes` is the server's
    /// `--max-request-bytes`, from which the fragment size follows.
    pub fn new(mvcc: Arc<Mvcc>, max_request_bytes: usize) -> Arc<Self> {
        let notified = mvcc.current_revision();
        Arc::new(WatchHub {
            mvcc,
            state: Mutex::new(State {
                notified,
                streams: HashMap::new(),
                watchers: HashMap::new(),
                next_stream: 1,
            }),
            wake: Notify::new(),
            fragment_bytes: max_request_bytes.saturating_add(response::GRPC_OVERHEAD_BYTES),
        })
    }

    /// Watchers registered on all streams.
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// The size from which a marked response is split (see [`fragments`]).
    pub fn fragment_bytes(&self) -> usize {
        self.fragment_bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client stream whose responses go to `tx`.
    pub fn open_stream(self: &Arc<Self>, tx: Outbound) -> StreamHandle {
        let mut st = self.lock();
        let id = st.next_stream;
        st.next_stream += 1;
        st.streams.insert(
            id,
            Stream {
                tx,
                next_id: 0,
                progress_pending: false,
            },
        );
        StreamHandle {
            hub: self.clone(),
            id,
        }
    }

    /// Called by apply once a batch of revisions is committed, with the
    /// events of each revision, in revision order. Never blocks: a stream
    /// that cannot take the events right now leaves the live fan-out and
    /// catches up later.
    ///
    /// A watcher gets what it selects from the whole batch in one response
    /// (cut at a revision boundary from [`COALESCE_BYTES`] on), with the
    /// header at the last revision it covers, as etcd sends a watcher
    /// catching up; the events of one revision are never split.
    pub fn notify(&self, changes: &[(i64, Vec<Event>)]) {
        let Some(&(last, _)) = changes.last() else {
            return;
        };
        let mut st = self.lock();
        st.notified = last;
        let State {
            streams, watchers, ..
        } = &mut *st;
        let mut demoted = false;
        let mut encoded: Vec<Encoded<'_>> = changes
            .iter()
            .map(|(_, events)| Encoded::new(&self.mvcc, events.len()))
            .collect();
        for ((stream, watch_id), w) in watchers.iter_mut() {
            if w.phase != Phase::Synced || last < w.next_rev {
                continue;
            }
            let mut responses = Vec::new();
            let mut selected = Vec::new();
            let mut bytes = 0;
            let mut first = None;
            for ((rev, events), encoded) in changes.iter().zip(encoded.iter_mut()) {
                if *rev < w.next_rev {
                    continue;
                }
                first.get_or_insert(*rev);
                bytes += w.select_into(events, encoded, &mut selected);
                if bytes >= COALESCE_BYTES {
                    let events = std::mem::take(&mut selected);
                    responses.push(response::events(*watch_id, *rev, events, w.fragment));
                    bytes = 0;
                }
            }
            if !selected.is_empty() {
                responses.push(response::events(*watch_id, last, selected, w.fragment));
            }
            if responses.is_empty() {
                continue;
            }
            let Some(s) = streams.get(stream) else {
                continue;
            };
            if try_send_all(&s.tx, responses) {
                w.sent_since_tick = true;
            } else if let Some(first) = first {
                w.phase = Phase::Unsynced;
                w.next_rev = first;
                demoted = true;
            }
        }
        drop(st);
        if demoted {
            self.wake.notify_one();
        }
    }

    /// The store was replaced wholesale (a snapshot was installed): every
    /// watcher catches up from history, or learns it was compacted away.
    pub fn restored(&self) {
        let mut st = self.lock();
        let before = st.notified;
        st.notified = self.mvcc.current_revision();
        for w in st.watchers.values_mut() {
            if w.phase == Phase::Synced {
                w.phase = Phase::Unsynced;
                w.next_rev = w.next_rev.max(before + 1);
            }
        }
        drop(st);
        self.wake.notify_one();
    }

    /// One pass over the unsynced watchers: each gets the next batch of
    /// history, and becomes synced once it has everything.
    fn sync_unsynced(&self) {
        let todo: Vec<(u64, i64)> = {
            let st = self.lock();
            st.watchers
                .iter()
                .filter(|(_, w)| w.phase == Phase::Unsynced)
                .map(|(k, _)| *k)
                .collect()
        };
        let mut again = false;
        for key in todo {
            again |= self.sync_one(key);
        }
        self.send_pending_progress();
        if again {
            self.wake.notify_one();
        }
    }

    /// Advances one unsynced watcher; returns true if it has more to catch up.
    fn sync_one(&self, key: (u64, i64)) -> bool {
        // Read what to fetch under the lock, fetch without it.
        let (from, to, spec) = {
            let st = self.lock();
            let Some(w) = st.watchers.get(&key) else {
                return false;
            };
            if w.phase != Phase::Unsynced {
                return false;
            }
            let spec = w.clone();
            (w.next_rev, st.notified, spec)
        };
        let history = self.catch_up_batch(spec.range(), from, to);
        let mut st = self.lock();
        let State {
            streams,
            watchers,
            notified,
            ..
        } = &mut *st;
        let Some(w) = watchers.get_mut(&key) else {
            return false;
        };
        if w.phase != Phase::Unsynced || w.next_rev != from {
            return false;
        }
        let Some(stream) = streams.get(&key.0) else {
            return false;
        };
        match history {
            Err(MvccError::Compacted) => {
                let compacted = self.mvcc.compacted_revision();
                if stream
                    .tx
                    .try_send(response::compacted(key.1, compacted))
                    .is_ok()
                {
                    w.phase = Phase::Compacted;
                }
                false
            }
            Err(e) => {
                // Retried at the next pass.
                tracing::warn!("watch catch-up failed: {e}");
                false
            }
            Ok((events, next_rev)) => {
                let selected = spec.select(&events, &mut Encoded::new(&self.mvcc, events.len()));
                let responses = if selected.is_empty() {
                    Vec::new()
                } else {
                    vec![response::events(key.1, *notified, selected, w.fragment)]
                };
                let sent = !responses.is_empty();
                if !try_send_all(&stream.tx, responses) {
                    return false;
                }
                w.sent_since_tick |= sent;
                w.next_rev = next_rev;
                if w.next_rev > *notified {
                    w.phase = Phase::Synced;
                    false
                } else {
                    true
                }
            }
        }
    }

    /// The next catch-up batch of `range` from revision `from` up to `to`,
    /// cut as etcd cuts it: the events of at most [`BATCH_REVS`] distinct
    /// revisions (counted before the watcher's filters, as etcd filters
    /// later), however many store revisions that takes to scan. Returns the
    /// events and the first revision they do not cover.
    fn catch_up_batch(
        &self,
        range: KeyRange<'_>,
        from: i64,
        to: i64,
    ) -> Result<(Vec<Event>, i64), MvccError> {
        let rev_of = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let mut events: Vec<Event> = Vec::new();
        let mut revs = 0;
        let mut at = from;
        while at <= to {
            let (chunk, scanned_to) = self.mvcc.read().history(range, at, to, SCAN_REVS)?;
            for e in chunk {
                if events.last().is_none_or(|last| rev_of(last) != rev_of(&e)) {
                    revs += 1;
                    if revs > BATCH_REVS {
                        return Ok((events, rev_of(&e)));
                    }
                }
                events.push(e);
            }
            if scanned_to < at {
                break; // nothing readable past `at` yet
            }
            at = scanned_to + 1;
        }
        Ok((events, at))
    }

    /// Answers deferred progress requests of streams that are now synced.
    fn send_pending_progress(&self) {
        let mut st = self.lock();
        let notified = st.notified;
        let ready: Vec<u64> = st
            .streams
            .iter()
            .filter(|(id, s)| s.progress_pending && all_synced(&st.watchers, **id))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(s) = st.streams.get_mut(&id) {
                if s.tx.try_send(response::progress(-1, notified)).is_ok() {
                    s.progress_pending = false;
                }
            }
        }
    }

    /// One periodic tick: a progress notification (the watcher's id, the
    /// current revision) to each synced watcher that asked for them and was
    /// sent no events since the previous tick, as etcd's send loop does.
    fn send_progress_notifications(&self) {
        let mut st = self.lock();
        let State {
            streams,
            watchers,
            notified,
            ..
        } = &mut *st;
        for ((stream, watch_id), w) in watchers.iter_mut() {
            if !w.progress_notify {
                continue;
            }
            if w.phase == Phase::Synced && !w.sent_since_tick {
                if let Some(s) = streams.get(stream) {
                    // A full queue means events are flowing; skipping is fine.
                    let _ = s.tx.try_send(response::progress(*watch_id, *notified));
                }
            }
            w.sent_since_tick = false;
        }
    }
}

impl StreamHandle {
    /// Creates a watcher. On success returns its id and the revision for the
    /// `created` response; the caller queues that response, then calls
    /// [`StreamHandle::activate`].
    pub fn create(&self, req: &WatchCreateRequest) -> Result<(i64, i64), (i64, CreateError)> {
        let key = if req.key.is_empty() {
            vec![0]
        } else {
            req.key.clone()
        };
        if !req.range_end.is_empty() && req.range_end != [0] && req.range_end <= key {
            return Err((-1, CreateError::EmptyRange));
        }
        let mut st = self.hub.lock();
        let current = self.hub.mvcc.current_revision();
        let State {
            streams, watchers, ..
        } = &mut *st;
        let stream = streams
            .get_mut(&self.id)
            .expect("stream registered while its handle lives");
        let id = if req.watch_id == 0 {
            while watchers.contains_key(&(self.id, stream.next_id)) {
                stream.next_id += 1;
            }
            stream.next_id += 1;
            stream.next_id - 1
        } else if watchers.contains_key(&(self.id, req.watch_id)) {
            return Err((-1, CreateError::DuplicateId));
        } else {
            req.watch_id
        };
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        watchers.insert(
            (self.id, id),
            Watcher {
                key,
                end: req.range_end.clone(),
                next_rev: if req.start_revision <= 0 {
                    current + 1
                } else {
                    req.start_revision
                },
                phase: Phase::Pending,
                no_put: has(FilterType::Noput),
                no_delete: has(FilterType::Nodelete),
                prev_kv: req.prev_kv,
                fragment: req.fragment,
                progress_notify: req.progress_notify,
                sent_since_tick: false,
            },
        );
        Ok((id, current))
    }

    /// Starts delivering events to a created watcher.
    pub fn activate(&self, watch_id: i64) {
        let mut st = self.hub.lock();
        let notified = st.notified;
        if let Some(w) = st.watchers.get_mut(&(self.id, watch_id)) {
            if w.phase == Phase::Pending {
                w.phase = if w.next_rev > notified {
                    Phase::Synced
                } else {
                    Phase::Unsynced
                };
            }
            if w.phase == Phase::Unsynced {
                drop(st);
                self.hub.wake.notify_one();
            }
        }
    }

    /// Removes a watcher; false if the stream has no such watcher.
    pub fn cancel(&self, watch_id: i64) -> bool {
        self.hub
            .lock()
            .watchers
            .remove(&(self.id, watch_id))
            .is_some()
    }

    /// Handles a progress request: answered at once (watch id -1, current
    /// revision) when every watcher of the stream is synced, else as soon
    /// as they are.
    pub fn request_progress(&self) {
        let mut st = self.hub.lock();
        let notified = st.notified;
        let synced = all_synced(&st.watchers, self.id);
        if let Some(s) = st.streams.get_mut(&self.id) {
            if synced && s.tx.try_send(response::progress(-1, notified)).is_ok() {
                return;
            }
            s.progress_pending = true;
        }
        drop(st);
        self.hub.wake.notify_one();
    }

    /// The revision the hub has delivered up to.
    pub fn notified(&self) -> i64 {
        self.hub.lock().notified
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        st.streams.remove(&self.id);
        st.watchers.retain(|(stream, _), _| *stream != self.id);
    }
}

/// Whether every watcher of `stream` has everything up to the notified
/// revision (a compacted watcher will never get anything more).
fn all_synced(watchers: &HashMap<(u64, i64), Watcher>, stream: u64) -> bool {
    watchers
        .iter()
        .filter(|((s, _), _)| *s == stream)
        .all(|(_, w)| matches!(w.phase, Phase::Synced | Phase::Compacted))
}

/// Queues all of `responses` or none of them.
fn try_send_all(tx: &Outbound, responses: Vec<Outgoing>) -> bool {
    if responses.is_empty() {
        return true;
    }
    match tx.try_reserve_many(responses.len()) {
        Ok(permits) => {
            for (permit, r) in permits.zip(responses) {
                permit.send(r);
            }
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
