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

/// Events for one watcher at header `revision`. With `fragment`, a response
/// over `max_bytes` is split; every part but the last has `fragment` set.
pub fn events(
    watch_id: i64,
    revision: i64,
    events: Vec<Event>,
    fragment: bool,
    max_bytes: usize,
) -> Vec<WatchResponse> {
    let whole = WatchResponse {
        header: header_at(revision),
        watch_id,
        events,
        ..Default::default()
    };
    if !fragment || whole.encoded_len() <= max_bytes {
        return vec![whole];
    }
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for e in whole.events {
        let len = e.encoded_len() + 8;
        if !current.is_empty() && size + len > max_bytes {
            parts.push(std::mem::take(&mut current));
            size = 0;
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
            header: header_at(revision),
            watch_id,
            events,
            fragment: i < last,
            ..Default::default()
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

    #[test]
    fn small_responses_are_not_fragmented() {
        let r = events(1, 5, vec![event(10), event(10)], true, 1000);
        assert_eq!(r.len(), 1);
        assert!(!r[0].fragment);
    }

    #[test]
    fn large_responses_split_with_fragment_on_all_but_last() {
        let r = events(1, 5, (0..10).map(|_| event(400)).collect(), true, 1000);
        assert!(r.len() >= 4);
        assert!(r[..r.len() - 1].iter().all(|p| p.fragment));
        assert!(!r.last().unwrap().fragment);
        assert_eq!(r.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        assert!(r.iter().all(|p| p.encoded_len() <= 1000 + 500));
    }

    #[test]
    fn without_fragment_flag_everything_goes_in_one_response() {
        assert_eq!(
            events(1, 5, (0..10).map(|_| event(400)).collect(), false, 1000).len(),
            1
        );
    }
}
