//! The watch responses the hub queues. Headers carry only the revision
//! here; the Watch service adds cluster, member and term when sending.
//!
//! Events travel already encoded: the hub encodes each event of a revision
//! once (as the `events` field of a `WatchResponse`), and every watcher
//! that selected it shares those bytes, instead of each watcher's stream
//! cloning the event and encoding it again.

use ferrocd_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use ferrocd_proto::mvccpb::Event;
use prost::bytes::{BufMut, Bytes};
use prost::Message;

/// `WatchResponse.events`' field number.
const EVENTS_FIELD: u32 = 11;

/// A watch response as a client stream sends it: every field but the
/// events in `resp` (whose `events` stay empty), and the events as encoded
/// fields. `events` is the highest field number of a `WatchResponse`, so
/// `resp`'s encoding followed by the event fields is byte for byte what
/// prost makes of the whole response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outgoing {
    pub resp: WatchResponse,
    pub events: Vec<Bytes>,
}

impl Outgoing {
    /// The size of the encoded response.
    pub fn encoded_len(&self) -> usize {
        self.resp.encoded_len() + self.events.iter().map(Bytes::len).sum::<usize>()
    }

    /// Appends the encoded response to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        self.resp.encode(buf)?;
        for e in &self.events {
            buf.put_slice(e);
        }
        Ok(())
    }

    /// The response a client decodes from these bytes.
    #[cfg(test)]
    pub fn decoded(&self) -> WatchResponse {
        let mut buf = Vec::new();
        self.encode(&mut buf).expect("a Vec grows");
        WatchResponse::decode(buf.as_slice()).expect("a WatchResponse")
    }
}

impl From<WatchResponse> for Outgoing {
    fn from(mut resp: WatchResponse) -> Self {
        let events = std::mem::take(&mut resp.events)
            .iter()
            .map(encode_event)
            .collect();
        Outgoing { resp, events }
    }
}

/// `e` encoded as one `events` field of a `WatchResponse`.
pub fn encode_event(e: &Event) -> Bytes {
    let len = e.encoded_len();
    let mut field = Vec::with_capacity(1 + prost::length_delimiter_len(len) + len);
    prost::encoding::message::encode(EVENTS_FIELD, e, &mut field);
    Bytes::from(field)
}

/// A header with just `revision` set.
pub fn header_at(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The `created` response (or, with a reason, a refused create).
pub fn created(watch_id: i64, revision: i64, refused: Option<String>) -> Outgoing {
    WatchResponse {
        header: header_at(revision),
        watch_id,
        created: true,
        canceled: refused.is_some(),
        cancel_reason: refused.unwrap_or_default(),
        ..Default::default()
    }
    .into()
}

/// Encoded events for one watcher at header `revision`. `fragment` marks a
/// response of a watcher that asked for fragments: the Watch service splits
/// it with [`fragments`] once the full header is known (as etcd splits in
/// its send loop), and no marked response reaches a client unsplit.
pub fn events(watch_id: i64, revision: i64, events: Vec<Bytes>, fragment: bool) -> Outgoing {
    Outgoing {
        resp: WatchResponse {
            header: header_at(revision),
            watch_id,
            fragment,
            ..Default::default()
        },
        events,
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
pub fn fragments(mut out: Outgoing, max_bytes: usize) -> Vec<Outgoing> {
    let marked = out.resp.fragment;
    out.resp.fragment = false;
    if !marked || out.events.len() < 2 || out.encoded_len() < max_bytes {
        return vec![out];
    }
    let events = std::mem::take(&mut out.events);
    out.resp.fragment = true;
    // Repeated message fields encode as concatenated fields, so a part's
    // size is the empty part's plus each event's field.
    let base = out.encoded_len();
    let mut parts: Vec<Vec<Bytes>> = Vec::new();
    let mut current = Vec::new();
    let mut size = base;
    for e in events {
        if !current.is_empty() && size + e.len() >= max_bytes {
            parts.push(std::mem::take(&mut current));
            size = base;
        }
        size += e.len();
        current.push(e);
    }
    parts.push(current);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, events)| Outgoing {
            resp: WatchResponse {
                fragment: i < last,
                ..out.resp.clone()
            },
            events,
        })
        .collect()
}

/// The response to a watcher whose start revision was compacted away.
pub fn compacted(watch_id: i64, compact_revision: i64) -> Outgoing {
    WatchResponse {
        header: header_at(0),
        watch_id,
        compact_revision,
        canceled: true,
        ..Default::default()
    }
    .into()
}

/// An empty response announcing that everything up to `revision` was sent.
pub fn progress(watch_id: i64, revision: i64) -> Outgoing {
    WatchResponse {
        header: header_at(revision),
        watch_id,
        ..Default::default()
    }
    .into()
}

/// The response confirming a cancel.
pub fn canceled(watch_id: i64, revision: i64) -> Outgoing {
    WatchResponse {
        header: header_at(revision),
        watch_id,
        canceled: true,
        ..Default::default()
    }
    .into()
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

    fn marked(n: usize, size: usize) -> Outgoing {
        let one = encode_event(&event(size));
        events(1, 5, vec![one; n], true)
    }

    #[test]
    fn encoded_events_make_the_bytes_prost_makes_of_the_whole_response() {
        let kv = |key: &[u8], rev: i64| KeyValue {
            key: key.to_vec(),
            create_revision: 2,
            mod_revision: rev,
            version: rev - 1,
            value: vec![7; 300],
            lease: 0x1234_5678,
        };
        let whole = WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: u64::MAX,
                member_id: 9,
                revision: 1 << 40,
                raft_term: 3,
            }),
            watch_id: -1,
            created: true,
            canceled: true,
            compact_revision: 77,
            cancel_reason: "why".into(),
            fragment: true,
            events: vec![
                Event {
                    r#type: 1,
                    kv: Some(kv(b"a", 5)),
                    prev_kv: Some(kv(b"a", 4)),
                },
                Event {
                    r#type: 0,
                    kv: Some(kv(&[0xff; 200], 6)),
                    prev_kv: None,
                },
                Event::default(),
            ],
        };
        let out = Outgoing::from(whole.clone());
        assert!(out.resp.events.is_empty());
        assert_eq!(out.events.len(), 3);
        let mut bytes = Vec::new();
        out.encode(&mut bytes).unwrap();
        assert_eq!(bytes, whole.encode_to_vec());
        assert_eq!(out.encoded_len(), bytes.len());
        assert_eq!(out.decoded(), whole);
        let empty = Outgoing::from(WatchResponse::default());
        assert_eq!(empty.encoded_len(), 0);
        assert_eq!(empty.decoded(), WatchResponse::default());
    }

    #[test]
    fn small_responses_are_not_fragmented() {
        let r = fragments(marked(2, 10), 1000);
        assert_eq!(r.len(), 1);
        assert!(!r[0].resp.fragment, "the marker is cleared");
    }

    #[test]
    fn large_responses_split_with_fragment_on_all_but_last() {
        let r = fragments(marked(10, 400), 1000);
        assert!(r.len() >= 4);
        assert!(r[..r.len() - 1].iter().all(|p| p.resp.fragment));
        assert!(!r.last().unwrap().resp.fragment);
        assert_eq!(r.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        // Every part stays under the limit unless it holds a single event,
        // counted as the client counts it.
        assert!(r
            .iter()
            .all(|p| p.decoded().encoded_len() < 1000 || p.events.len() == 1));
        assert!(r
            .iter()
            .all(|p| p.resp.watch_id == 1 && p.resp.header == header_at(5)));
        let decoded: Vec<Event> = r.iter().flat_map(|p| p.decoded().events).collect();
        assert_eq!(decoded, vec![event(400); 10]);
    }

    #[test]
    fn parts_are_cut_where_etcd_cuts_them() {
        // etcd adds events to a part while its encoded size (with the
        // fragment flag set) stays below the limit.
        let whole = marked(5, 100);
        let mut probe = whole.clone();
        probe.events.truncate(2);
        let two = probe.decoded().encoded_len();
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
        unmarked.resp.fragment = false;
        assert_eq!(fragments(unmarked, 1000).len(), 1);
    }
}
