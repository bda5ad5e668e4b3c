//! The watch responses the hub queues. Headers carry only the revision
//! here; the Watch service adds cluster, member and term when sending.

use ferrocd_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use ferrocd_proto::mvccpb::Event;
use prost::Message;

/// A header with just `revision` set.
pub fn header_at(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The `created` response (or, with a reason, a refused create).
pub fn created(watch_id: i64, revision: i64, refused: Option<String>) -> WatchResponse {
    WatchResponse {
        header: header_at(revision),
        watch_id,
        created: true,
        canceled: refused.is_some(),
        cancel_reason: refused.unwrap_or_default(),
        ..Default::default()
    }
}

/// Events for one watcher at header `revision`. `fragment` marks a response
/// of a watcher that asked for fragments: the Watch service splits it with
/// [`fragments`] once the full header is known (as etcd splits in its send
/// loop), and no marked response reaches a client unsplit.
pub fn events(watch_id: i64, revision: i64, events: Vec<Event>, fragment: bool) -> WatchResponse {
    WatchResponse {
        header: header_at(revision),
        watch_id,
        events,
        fragment,
        ..Default::default()
    }
}

/// How much larger than `--max-request-bytes` a watch response may be
/// before it is fragmented: etcd allows for gRPC overhead (its
/// `grpcOverheadBytes`).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Splits a response marked by [`events`] exactly as etcd's
/// `sendFragments` does: a response of at least `max_bytes` with two or
/// more events is cut into parts, each taking events while it stays under
/// `max_bytes` (counting its header and the `fragment` flag), and always at
/// least one event. Every part but the last has `fragment` set. Unmarked
/// responses, and marked ones that need no split, come back with
/// `fragment` clear.
pub fn fragments(mut resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    let marked = resp.fragment;
    resp.fragment = false;
    if !marked || resp.events.len() < 2 || resp.encoded_len() < max_bytes {
        return vec![resp];
    }
    let events = std::mem::take(&mut resp.events);
    resp.fragment = true;
    // Repeated message fields encode as concatenated fields, so a part's
    // size is the empty part's plus each event's field.
    let base = resp.encoded_len();
    let field = |e: &Event| {
        let len = e.encoded_len();
        1 + prost::encoding::encoded_len_varint(len as u64) + len
    };
    let mut parts: Vec<Vec<Event>> = Vec::new();
    let mut current = Vec::new();
    let mut size = base;
    for e in events {
        let len = field(&e);
        if !current.is_empty() && size + len >= max_bytes {
            parts.push(std::mem::take(&mut current));
            size = base;
        }
        size += len;
        current.push(e);
    }
    parts.push(current);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, events)| WatchResponse {
            events,
            fragment: i < last,
            ..resp.clone()
        })
        .collect()
}

/// The response to a watcher whose start revision was compacted away.
pub fn compacted(watch_id: i64, compact_revision: i64) -> WatchResponse {
    WatchResponse {
        header: header_at(0),
        watch_id,
        compact_revision,
        canceled: true,
        ..Default::default()
    }
}

/// An empty response announcing that everything up to `revision` was sent.
pub fn progress(watch_id: i64, revision: i64) -> WatchResponse {
    WatchResponse {
        header: header_at(revision),
        watch_id,
        ..Default::default()
    }
}

/// The response confirming a cancel.
pub fn canceled(watch_id: i64, revision: i64) -> WatchResponse {
    WatchResponse {
        header: header_at(revision),
        watch_id,
        canceled: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::mvccpb::KeyValue;

    fn event(size: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                value: vec![b'x'; size],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn marked(n: usize, size: usize) -> WatchResponse {
        events(1, 5, (0..n).map(|_| event(size)).collect(), true)
    }

    #[test]
    fn small_responses_are_not_fragmented() {
        let r = fragments(marked(2, 10), 1000);
        assert_eq!(r.len(), 1);
        assert!(!r[0].fragment, "the marker is cleared");
    }

    #[test]
    fn large_responses_split_with_fragment_on_all_but_last() {
        let r = fragments(marked(10, 400), 1000);
        assert!(r.len() >= 4);
        assert!(r[..r.len() - 1].iter().all(|p| p.fragment));
        assert!(!r.last().unwrap().fragment);
        assert_eq!(r.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        // Every part stays under the limit unless it holds a single event.
        assert!(r
            .iter()
            .all(|p| p.encoded_len() < 1000 || p.events.len() == 1));
        assert!(r
            .iter()
            .all(|p| p.watch_id == 1 && p.header == header_at(5)));
    }

    #[test]
    fn parts_are_cut_where_etcd_cuts_them() {
        // etcd adds events to a part while its encoded size (with the
        // fragment flag set) stays below the limit.
        let whole = marked(5, 100);
        let mut probe = whole.clone();
        probe.events.truncate(2);
        let two = probe.encoded_len();
        let r = fragments(whole.clone(), two + 1);
        assert_eq!(
            r.iter().map(|p| p.events.len()).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        assert_eq!(r[0].encoded_len(), two, "two events fit under the limit");
        let r = fragments(whole, two);
        assert_eq!(r.iter().map(|p| p.events.len()).sum::<usize>(), 5);
        assert!(
            r.iter().all(|p| p.events.len() == 1),
            "at the limit exactly: cut"
        );
    }

    #[test]
    fn a_single_event_or_an_unmarked_response_is_never_split() {
        assert_eq!(fragments(marked(1, 5000), 1000).len(), 1);
        let mut unmarked = marked(10, 400);
        unmarked.fragment = false;
        assert_eq!(fragments(unmarked, 1000).len(), 1);
    }
}
