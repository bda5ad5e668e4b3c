use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::Compare;

use super::*;
use crate::mvcc::Mvcc;

fn store() -> (sled::Db, Mvcc) {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let mvcc = Mvcc::open(db.open_tree("state").unwrap()).unwrap();
    (db, mvcc)
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn apply_put(store: &Mvcc, r: PutRequest) -> Result<PutResponse, KvError> {
    let mut w = store.write();
    w.begin();
    let res = put(&mut w, &r, &NoLeases);
    w.end();
    w.commit().unwrap();
    res
}

fn apply_txn(store: &Mvcc, r: &TxnRequest) -> Result<TxnResponse, KvError> {
    let mut w = store.write();
    w.begin();
    let res = txn(&mut w, r, &NoLeases);
    w.end();
    w.commit().unwrap();
    res
}

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn op(r: Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

fn mod_equals(key: &str, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.into(),
        range_end: vec![],
        target_union: Some(TargetUnion::ModRevision(rev)),
    }
}

#[test]
fn txn_else_branch_returns_current_value() {
    let (_db, s) = store();
    apply_put(&s, put_req("k", "v1")).unwrap();
    let update = TxnRequest {
        compare: vec![mod_equals("k", 99)],
        success: vec![op(Request::RequestPut(put_req("k", "v2")))],
        failure: vec![op(Request::RequestRange(get("k")))],
    };
    let resp = apply_txn(&s, &update).unwrap();
    assert!(!resp.succeeded);
    let Some(Response::ResponseRange(r)) = &resp.responses[0].response else {
        panic!("expected a range response, got {resp:?}")
    };
    assert_eq!(r.kvs[0].value, b"v1");
    assert_eq!(resp.header.unwrap().revision, 2);
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn create_if_absent_txn_puts_once() {
    let (_db, s) = store();
    let create = TxnRequest {
        compare: vec![mod_equals("k", 0)],
        success: vec![op(Request::RequestPut(put_req("k", "v")))],
        failure: vec![],
    };
    assert!(apply_txn(&s, &create).unwrap().succeeded);
    assert!(!apply_txn(&s, &create).unwrap().succeeded);
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn failing_txn_check_changes_nothing() {
    let (_db, s) = store();
    let bad = TxnRequest {
        compare: vec![],
        success: vec![
            op(Request::RequestPut(put_req("a", "1"))),
            op(Request::RequestPut(PutRequest {
                key: "missing".into(),
                ignore_value: true,
                ..Default::default()
            })),
        ],
        failure: vec![],
    };
    assert_eq!(apply_txn(&s, &bad), Err(KvError::KeyNotFound));
    assert_eq!(s.current_revision(), 1);
    assert_eq!(range(&s.read(), &get("a")).unwrap().count, 0);
}

#[test]
fn put_with_unknown_lease_is_refused() {
    let (_db, s) = store();
    let r = PutRequest {
        lease: 42,
        ..put_req("k", "v")
    };
    assert_eq!(apply_put(&s, r), Err(KvError::LeaseNotFound));
}

#[test]
fn ignore_value_keeps_old_value_and_prev_kv_is_returned() {
    let (_db, s) = store();
    apply_put(&s, put_req("k", "old")).unwrap();
    let r = PutRequest {
        key: "k".into(),
        ignore_value: true,
        prev_kv: true,
        ..Default::default()
    };
    let resp = apply_put(&s, r).unwrap();
    assert_eq!(resp.prev_kv.unwrap().version, 1);
    let now = range(&s.read(), &get("k")).unwrap();
    assert_eq!(
        (now.kvs[0].value.as_slice(), now.kvs[0].version),
        (&b"old"[..], 2)
    );
}

#[test]
fn range_with_limit_reports_more_and_total_count() {
    let (_db, s) = store();
    for k in ["a", "b", "c"] {
        apply_put(&s, put_req(k, k)).unwrap();
    }
    let r = RangeRequest {
        key: "a".into(),
        range_end: "z".into(),
        limit: 2,
        ..Default::default()
    };
    let resp = range(&s.read(), &r).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (2, true, 3));
}

#[test]
fn range_sorts_descending_by_mod_revision_and_filters() {
    let (_db, s) = store();
    for k in ["a", "b", "c"] {
        apply_put(&s, put_req(k, k)).unwrap();
    }
    let r = RangeRequest {
        key: "a".into(),
        range_end: "z".into(),
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Mod as i32,
        min_mod_revision: 3,
        ..Default::default()
    };
    let resp = range(&s.read(), &r).unwrap();
    let keys: Vec<_> = resp.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"c".to_vec(), b"b".to_vec()]);
    assert_eq!(resp.count, 3);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let (_db, s) = store();
    let nested = TxnRequest {
        compare: vec![mod_equals("x", 0)],
        success: vec![op(Request::RequestPut(put_req("y", "1")))],
        failure: vec![],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![
            op(Request::RequestPut(put_req("x", "1"))),
            op(Request::RequestTxn(nested)),
        ],
        failure: vec![],
    };
    let resp = apply_txn(&s, &outer).unwrap();
    let Some(Response::ResponseTxn(inner)) = &resp.responses[1].response else {
        panic!("expected nested txn response")
    };
    assert!(inner.succeeded, "x was absent before the txn began");
    assert_eq!(range(&s.read(), &get("y")).unwrap().count, 1);
}

#[test]
fn ignore_value_put_of_a_key_deleted_from_key_earlier_fails_without_effect() {
    let (_db, s) = store();
    apply_put(&s, put_req("k", "v")).unwrap();
    let ignore_value = PutRequest {
        key: "k".into(),
        ignore_value: true,
        ..Default::default()
    };
    let delete_from = DeleteRangeRequest {
        key: "a".into(),
        range_end: vec![0],
        prev_kv: false,
    };
    let r = TxnRequest {
        compare: vec![],
        success: vec![
            op(Request::RequestDeleteRange(delete_from)),
            op(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success: vec![op(Request::RequestPut(ignore_value))],
                failure: vec![],
            })),
        ],
        failure: vec![],
    };
    assert_eq!(apply_txn(&s, &r), Err(KvError::KeyNotFound));
    assert_eq!(s.current_revision(), 2);
    assert_eq!(range(&s.read(), &get("k")).unwrap().count, 1);
}
