//! Arbitrary requests, as a client could send them, through validation and
//! apply: never a panic, and the store stays consistent (revisions only
//! grow, a rejected request changes nothing).

use ferrocd_proto::etcdserverpb::compare::TargetUnion;
use ferrocd_proto::etcdserverpb::request_op::Request;
use ferrocd_proto::etcdserverpb::*;
use proptest::prelude::*;

use super::*;
use crate::mvcc::Mvcc;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0]),
        Just(vec![0xff]),
        prop::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xffu8)],
            1..4
        ),
    ]
}

fn small_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(1),
        Just(i64::MAX),
        Just(i64::MIN),
        -5i64..40
    ]
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        bytes(),
        bytes(),
        small_i64(),
        small_i64(),
        any::<i32>(),
        any::<i32>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        (small_i64(), small_i64(), small_i64(), small_i64()),
    )
        .prop_map(
            |(
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                serializable,
                keys_only,
                count_only,
                (a, b, c, d),
            )| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    serializable,
                    keys_only,
                    count_only,
                    min_mod_revision: a,
                    max_mod_revision: b,
                    min_create_revision: c,
                    max_create_revision: d,
                }
            },
        )
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        bytes(),
        bytes(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(key, value, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value,
                lease: 0,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    (
        any::<i32>(),
        any::<i32>(),
        bytes(),
        bytes(),
        small_i64(),
        0u8..5,
    )
        .prop_map(|(result, target, key, range_end, n, which)| Compare {
            result,
            target,
            key,
            range_end,
            target_union: match which {
                0 => Some(TargetUnion::Version(n)),
                1 => Some(TargetUnion::CreateRevision(n)),
                2 => Some(TargetUnion::ModRevision(n)),
                3 => Some(TargetUnion::Value(vec![b'a'])),
                _ => None,
            },
        })
}

fn txn_req() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        range_req().prop_map(|r| RequestOp {
            request: Some(Request::RequestRange(r))
        }),
        put_req().prop_map(|r| RequestOp {
            request: Some(Request::RequestPut(r))
        }),
        delete_req().prop_map(|r| RequestOp {
            request: Some(Request::RequestDeleteRange(r))
        }),
        Just(RequestOp { request: None }),
    ];
    let ops = leaf.prop_recursive(2, 12, 3, |inner| {
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| RequestOp {
                request: Some(Request::RequestTxn(TxnRequest {
                    compare,
                    success,
                    failure,
                })),
            })
    });
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(ops.clone(), 0..4),
        prop::collection::vec(ops, 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

#[derive(Debug, Clone)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(i64),
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        range_req().prop_map(Op::Range),
        put_req().prop_map(Op::Put),
        delete_req().prop_map(Op::Delete),
        txn_req().prop_map(Op::Txn),
        small_i64().prop_map(Op::Compact),
    ]
}

/// Validates `op` as the API does, then applies it as raft apply does.
fn apply(store: &Mvcc, op: &Op) {
    match op {
        Op::Range(r) if validate::range(r).is_ok() => {
            let _ = range(&store.read(), r);
        }
        Op::Put(r) if validate::put(r).is_ok() => {
            write(store, |w| put(w, r, &NoLeases).map(|_| ()))
        }
        Op::Delete(r) if validate::delete_range(r).is_ok() => {
            write(store, |w| delete_range(w, r).map(|_| ()))
        }
        Op::Txn(r) if validate::txn(r, 128).is_ok() => {
            write(store, |w| txn(w, r, &NoLeases).map(|_| ()))
        }
        Op::Compact(rev) => write(store, |w| {
            compact(
                w,
                &CompactionRequest {
                    revision: *rev,
                    physical: false,
                },
            )
            .map(|_| ())
        }),
        _ => {}
    }
}

fn write(store: &Mvcc, f: impl FnOnce(&mut crate::mvcc::WriteTxn<'_>) -> Result<(), KvError>) {
    let before = store.current_revision();
    let mut w = store.write();
    w.begin();
    let outcome = f(&mut w);
    w.end();
    w.commit().expect("commit");
    let after = store.current_revision();
    assert!(
        after >= before,
        "revision went back from {before} to {after}"
    );
    if outcome.is_err() {
        assert_eq!(after, before, "a refused request changed the revision");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_requests_never_panic_nor_corrupt_the_store(ops in prop::collection::vec(any_op(), 1..25)) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Mvcc::open(db.open_tree("state").unwrap()).unwrap();
        for op in &ops {
            apply(&store, op);
        }
        // Whatever happened, a full read at the current revision works and
        // agrees with itself.
        let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        let a = range(&store.read(), &all).unwrap();
        let b = range(&store.read(), &all).unwrap();
        prop_assert_eq!(a.count, b.count);
        prop_assert_eq!(a.kvs.len() as i64, a.count);
    }
}
