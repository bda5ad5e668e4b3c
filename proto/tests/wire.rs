//! Wire-format checks: the generated types must put every field on the same
//! tag (and wire type) as etcd v3.6, otherwise etcd clients silently misread
//! us. Each test encodes a message with prost and compares exact bytes.
//!
//! Tag byte = (field_number << 3) | wire_type, where wire type 0 = varint and
//! 2 = length-delimited. prost emits fields in ascending tag order.

use ferrocd_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, watch_create_request, watch_request,
    AlarmMember, AlarmType, CompactionRequest, Compare, DeleteRangeRequest, HashKvResponse,
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseTimeToLiveResponse, Member,
    PutRequest, PutResponse, RangeRequest, RequestOp, ResponseHeader, ResponseOp, StatusResponse,
    TxnRequest, TxnResponse, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use ferrocd_proto::ferrocdpb::{internal_request, InternalRequest};
use ferrocd_proto::{authpb, mvccpb};
use prost::Message;

/// Tag byte for a varint field (wire type 0); only for field numbers < 16.
const fn v(field: u8) -> u8 {
    field << 3
}

/// Tag byte for a length-delimited field (wire type 2); only for field numbers < 16.
const fn l(field: u8) -> u8 {
    (field << 3) | 2
}

fn enc<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

#[test]
fn put_request() {
    let m = PutRequest {
        key: b"a".to_vec(),
        value: b"b".to_vec(),
        lease: 5,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    assert_eq!(
        enc(&m),
        [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5, 0x20, 1, 0x28, 1, 0x30, 1]
    );
    // The example from the spec, without the ignore_* flags.
    let m = PutRequest {
        key: b"a".to_vec(),
        value: b"b".to_vec(),
        lease: 5,
        prev_kv: true,
        ..Default::default()
    };
    assert_eq!(enc(&m), [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5, 0x20, 1]);
}

#[test]
fn response_header() {
    let m = ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 3,
        raft_term: 4,
    };
    assert_eq!(enc(&m), [v(1), 1, v(2), 2, v(3), 3, v(4), 4]);
}

#[test]
fn range_request_all_fields() {
    let m = RangeRequest {
        key: b"k".to_vec(),
        range_end: b"z".to_vec(),
        limit: 3,
        revision: 4,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 10,
        max_mod_revision: 11,
        min_create_revision: 12,
        max_create_revision: 13,
    };
    #[rustfmt::skip]
    let want = [
        l(1), 1, b'k',
        l(2), 1, b'z',
        v(3), 3,
        v(4), 4,
        v(5), 2, // sort_order = DESCEND
        v(6), 3, // sort_target = MOD
        v(7), 1,
        v(8), 1,
        v(9), 1,
        v(10), 10,
        v(11), 11,
        v(12), 12,
        v(13), 13,
    ];
    assert_eq!(enc(&m), want);
}

#[test]
fn range_request_enum_values() {
    use range_request::{SortOrder, SortTarget};
    assert_eq!(
        [SortOrder::None, SortOrder::Ascend, SortOrder::Descend].map(|x| x as i32),
        [0, 1, 2]
    );
    assert_eq!(
        [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value
        ]
        .map(|x| x as i32),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn key_value() {
    let m = mvccpb::KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 4,
        value: b"v".to_vec(),
        lease: 6,
    };
    assert_eq!(
        enc(&m),
        [
            l(1),
            1,
            b'k',
            v(2),
            2,
            v(3),
            3,
            v(4),
            4,
            l(5),
            1,
            b'v',
            v(6),
            6
        ]
    );
}

#[test]
fn event() {
    let kv = mvccpb::KeyValue {
        key: b"k".to_vec(),
        ..Default::default()
    };
    let m = mvccpb::Event {
        r#type: mvccpb::event::EventType::Delete as i32,
        kv: Some(kv.clone()),
        prev_kv: Some(kv),
    };
    assert_eq!(
        enc(&m),
        [v(1), 1, l(2), 3, l(1), 1, b'k', l(3), 3, l(1), 1, b'k']
    );
}

#[test]
fn compare_fixed_fields_and_range_end() {
    let m = Compare {
        result: compare::CompareResult::NotEqual as i32,
        target: compare::CompareTarget::Lease as i32,
        key: b"k".to_vec(),
        range_end: b"z".to_vec(),
        target_union: None,
    };
    // range_end is field 64: tag = 64 << 3 | 2 = 514 = varint [0x82, 0x04].
    assert_eq!(
        enc(&m),
        [v(1), 3, v(2), 4, l(3), 1, b'k', 0x82, 0x04, 1, b'z']
    );
}

#[test]
fn compare_target_union() {
    use compare::TargetUnion;
    let cases: [(TargetUnion, &[u8]); 5] = [
        (TargetUnion::Version(9), &[v(4), 9]),
        (TargetUnion::CreateRevision(9), &[v(5), 9]),
        (TargetUnion::ModRevision(9), &[v(6), 9]),
        (TargetUnion::Value(b"x".to_vec()), &[l(7), 1, b'x']),
        (TargetUnion::Lease(9), &[v(8), 9]),
    ];
    for (union, want) in cases {
        let m = Compare {
            target_union: Some(union.clone()),
            ..Default::default()
        };
        assert_eq!(enc(&m), want, "{union:?}");
        // Oneof members are emitted even when zero-valued.
        let decoded = Compare::decode(want).unwrap();
        assert_eq!(decoded.target_union, Some(union));
    }
    let zero = Compare {
        target_union: Some(TargetUnion::Version(0)),
        ..Default::default()
    };
    assert_eq!(enc(&zero), [v(4), 0]);
}

#[test]
fn compare_enum_values() {
    use compare::{CompareResult as R, CompareTarget as T};
    assert_eq!(
        [R::Equal, R::Greater, R::Less, R::NotEqual].map(|x| x as i32),
        [0, 1, 2, 3]
    );
    assert_eq!(
        [T::Version, T::Create, T::Mod, T::Value, T::Lease].map(|x| x as i32),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn request_op_and_response_op_oneofs() {
    use request_op::Request;
    use response_op::Response;
    let key = b"k".to_vec();
    let ops = [
        (
            Request::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
            l(1),
        ),
        (
            Request::RequestPut(PutRequest {
                key: key.clone(),
                ..Default::default()
            }),
            l(2),
        ),
        (
            Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
            l(3),
        ),
    ];
    for (req, tag) in ops {
        let m = RequestOp { request: Some(req) };
        assert_eq!(enc(&m), [tag, 3, l(1), 1, b'k']);
    }
    let nested = RequestOp {
        request: Some(Request::RequestTxn(TxnRequest::default())),
    };
    assert_eq!(enc(&nested), [l(4), 0]);

    let header = Some(ResponseHeader {
        revision: 7,
        ..Default::default()
    });
    let m = ResponseOp {
        response: Some(Response::ResponsePut(PutResponse {
            header,
            prev_kv: None,
        })),
    };
    assert_eq!(enc(&m), [l(2), 4, l(1), 2, v(3), 7]);
    let m = ResponseOp {
        response: Some(Response::ResponseTxn(TxnResponse {
            succeeded: true,
            ..Default::default()
        })),
    };
    assert_eq!(enc(&m), [l(4), 2, v(2), 1]);
}

#[test]
fn txn_request() {
    let m = TxnRequest {
        compare: vec![Compare::default()],
        success: vec![RequestOp::default()],
        failure: vec![RequestOp::default(), RequestOp::default()],
    };
    assert_eq!(enc(&m), [l(1), 0, l(2), 0, l(3), 0, l(3), 0]);
}

#[test]
fn compaction_request() {
    let m = CompactionRequest {
        revision: 100,
        physical: true,
    };
    assert_eq!(enc(&m), [v(1), 100, v(2), 1]);
}

#[test]
fn watch_create_request() {
    use watch_create_request::FilterType;
    let m = WatchCreateRequest {
        key: b"k".to_vec(),
        range_end: b"z".to_vec(),
        start_revision: 3,
        progress_notify: true,
        filters: vec![FilterType::Noput as i32, FilterType::Nodelete as i32],
        prev_kv: true,
        watch_id: 7,
        fragment: true,
    };
    #[rustfmt::skip]
    let want = [
        l(1), 1, b'k',
        l(2), 1, b'z',
        v(3), 3,
        v(4), 1,
        l(5), 2, 0, 1, // proto3 repeated enum: packed
        v(6), 1,
        v(7), 7,
        v(8), 1,
    ];
    assert_eq!(enc(&m), want);
    // etcd (gogoproto) also emits packed filters; unpacked must decode too.
    let unpacked = [v(5), 1, v(5), 0];
    assert_eq!(
        WatchCreateRequest::decode(&unpacked[..]).unwrap().filters,
        [1, 0]
    );
}

#[test]
fn watch_request_oneof() {
    use watch_request::RequestUnion;
    let m = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            start_revision: 1,
            ..Default::default()
        })),
    };
    assert_eq!(enc(&m), [l(1), 2, v(3), 1]);
    let m = WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 5,
        })),
    };
    assert_eq!(enc(&m), [l(2), 2, v(1), 5]);
    let m = WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    assert_eq!(enc(&m), [l(3), 0]);
}

#[test]
fn watch_response() {
    let m = WatchResponse {
        header: Some(ResponseHeader {
            revision: 9,
            ..Default::default()
        }),
        watch_id: 2,
        created: true,
        canceled: true,
        compact_revision: 5,
        cancel_reason: "x".into(),
        fragment: true,
        events: vec![mvccpb::Event::default()],
    };
    #[rustfmt::skip]
    let want = [
        l(1), 2, v(3), 9, // header { revision: 9 }
        v(2), 2,
        v(3), 1,
        v(4), 1,
        v(5), 5,
        l(6), 1, b'x',
        v(7), 1,
        l(11), 0,
    ];
    assert_eq!(enc(&m), want);
}

#[test]
fn lease_messages() {
    // LeaseGrantRequest: TTL = 1, ID = 2 (note the order).
    let m = LeaseGrantRequest { ttl: 60, id: 42 };
    assert_eq!(enc(&m), [v(1), 60, v(2), 42]);

    let m = LeaseTimeToLiveResponse {
        header: None,
        id: 1,
        ttl: 2,
        granted_ttl: 3,
        keys: vec![b"k".to_vec()],
    };
    assert_eq!(enc(&m), [v(2), 1, v(3), 2, v(4), 3, l(5), 1, b'k']);

    let m = LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint {
            id: 1,
            remaining_ttl: 2,
        }],
    };
    assert_eq!(enc(&m), [l(1), 4, v(1), 1, v(2), 2]);
}

#[test]
fn member() {
    let m = Member {
        id: 1,
        name: "n".into(),
        peer_ur_ls: vec!["p".into()],
        client_ur_ls: vec!["c".into()],
        is_learner: true,
    };
    assert_eq!(
        enc(&m),
        [
            v(1),
            1,
            l(2),
            1,
            b'n',
            l(3),
            1,
            b'p',
            l(4),
            1,
            b'c',
            v(5),
            1
        ]
    );
}

#[test]
fn status_response() {
    let m = StatusResponse {
        header: None,
        version: "v".into(),
        db_size: 3,
        leader: 4,
        raft_index: 5,
        raft_term: 6,
        raft_applied_index: 7,
        errors: vec!["e".into()],
        db_size_in_use: 9,
        is_learner: true,
        storage_version: "s".into(),
        db_size_quota: 12,
        downgrade_info: Some(Default::default()),
    };
    #[rustfmt::skip]
    let want = [
        l(2), 1, b'v',
        v(3), 3,
        v(4), 4,
        v(5), 5,
        v(6), 6,
        v(7), 7,
        l(8), 1, b'e',
        v(9), 9,
        v(10), 1,
        l(11), 1, b's',
        v(12), 12,
        l(13), 0,
    ];
    assert_eq!(enc(&m), want);
}

#[test]
fn hash_kv_response() {
    let m = HashKvResponse {
        header: None,
        hash: 2,
        compact_revision: 3,
        hash_revision: 4,
    };
    assert_eq!(enc(&m), [v(2), 2, v(3), 3, v(4), 4]);
}

#[test]
fn alarms() {
    assert_eq!(
        [AlarmType::None, AlarmType::Nospace, AlarmType::Corrupt].map(|x| x as i32),
        [0, 1, 2]
    );
    let m = AlarmMember {
        member_id: 1,
        alarm: AlarmType::Nospace as i32,
    };
    assert_eq!(enc(&m), [v(1), 1, v(2), 1]);
}

#[test]
fn auth_permission() {
    let m = authpb::Permission {
        perm_type: authpb::permission::Type::Readwrite as i32,
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
    };
    assert_eq!(enc(&m), [v(1), 2, l(2), 1, b'a', l(3), 1, b'b']);
}

#[test]
fn internal_request() {
    use internal_request::Request;
    let cases: [(Request, u8); 7] = [
        (Request::Put(Default::default()), l(2)),
        (Request::DeleteRange(Default::default()), l(3)),
        (Request::Txn(Default::default()), l(4)),
        (Request::Compaction(Default::default()), l(5)),
        (Request::LeaseGrant(Default::default()), l(6)),
        (Request::LeaseRevoke(Default::default()), l(7)),
        (Request::LeaseCheckpoint(Default::default()), l(8)),
    ];
    for (req, tag) in cases {
        let m = InternalRequest {
            id: 1,
            request: Some(req),
            ..Default::default()
        };
        let bytes = enc(&m);
        assert_eq!(bytes, [v(1), 1, tag, 0]);
        assert_eq!(InternalRequest::decode(&bytes[..]).unwrap(), m);
    }
}

#[test]
fn service_names() {
    use ferrocd_proto::etcdserverpb::{
        auth_server, cluster_server, kv_server, lease_server, maintenance_server, watch_server,
    };
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(auth_server::SERVICE_NAME, "etcdserverpb.Auth");
}
