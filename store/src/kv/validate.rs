//! Checks etcd makes on KV requests before they reach raft.

use std::collections::HashSet;

use ferrocd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use ferrocd_proto::etcdserverpb::request_op::Request;
use ferrocd_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// Why a request was refused before being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("key is not provided")]
    EmptyKey,
    #[error("invalid sort option")]
    SortOption,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A txn op with no request set (etcd answers "key not found").
    #[error("txn op has no request")]
    EmptyOp,
}

pub fn range(r: &RangeRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(Invalid::SortOption);
    }
    Ok(())
}

pub fn put(r: &PutRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Invalid::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Invalid::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(r: &DeleteRangeRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    Ok(())
}

/// Checks a txn: op counts (nested txns share the budget), each op, and that
/// no key is written twice on any path through the txn.
pub fn txn(r: &TxnRequest, max_ops: usize) -> Result<(), Invalid> {
    txn_ops(r, max_ops)?;
    writes(&r.success)?;
    writes(&r.failure)?;
    Ok(())
}

fn txn_ops(r: &TxnRequest, max_ops: usize) -> Result<(), Invalid> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_ops {
        return Err(Invalid::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Invalid::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Request::RequestRange(q)) => range(q)?,
            Some(Request::RequestPut(q)) => put(q)?,
            Some(Request::RequestDeleteRange(q)) => delete_range(q)?,
            Some(Request::RequestTxn(q)) => txn_ops(q, max_ops - ops)?,
            None => return Err(Invalid::EmptyOp),
        }
    }
    Ok(())
}

/// A deleted interval `[start, end)`; `end == None` is a single key. A
/// `range_end` of "\0" makes an interval that etcd's check treats as empty.
#[derive(Clone)]
struct Deleted {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn covers(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start,
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

/// The keys put and ranges deleted by a list of ops, or the duplicate error.
fn writes(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), Invalid> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Deleted], key: &[u8]| dels.iter().any(|d| d.covers(key));

    let mut puts = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = writes(&t.success)?;
        let (puts_else, dels_else) = writes(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Invalid::DuplicateKey);
            }
        }
        for k in &puts_else {
            // Then and else exclude each other, so a key in both is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(Invalid::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Invalid::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(key: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del_op(key: &[u8], end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                prev_kv: false,
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn check(success: Vec<RequestOp>) -> Result<(), Invalid> {
        txn(
            &TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            },
            128,
        )
    }

    #[test]
    fn same_key_put_twice_is_duplicate() {
        assert_eq!(
            check(vec![put_op(b"a"), put_op(b"a")]),
            Err(Invalid::DuplicateKey)
        );
    }

    #[test]
    fn put_inside_deleted_range_is_duplicate() {
        assert_eq!(
            check(vec![del_op(b"a", b"c"), put_op(b"b")]),
            Err(Invalid::DuplicateKey)
        );
        assert_eq!(check(vec![del_op(b"a", b"c"), put_op(b"c")]), Ok(()));
    }

    #[test]
    fn overlapping_deletes_are_allowed() {
        assert_eq!(check(vec![del_op(b"a", b"c"), del_op(b"b", b"")]), Ok(()));
    }

    #[test]
    fn nested_then_and_else_may_put_the_same_key() {
        let nested = txn_op(vec![put_op(b"a")], vec![put_op(b"a")]);
        assert_eq!(check(vec![nested]), Ok(()));
        let clash = txn_op(vec![put_op(b"a")], vec![]);
        assert_eq!(check(vec![clash, put_op(b"a")]), Err(Invalid::DuplicateKey));
    }

    #[test]
    fn op_count_is_limited_including_nested_budget() {
        let many: Vec<_> = (0..4u8).map(|i| put_op(&[b'a' + i])).collect();
        let r = TxnRequest {
            compare: vec![],
            success: many.clone(),
            failure: vec![],
        };
        assert_eq!(txn(&r, 3), Err(Invalid::TooManyOps));
        assert_eq!(txn(&r, 4), Ok(()));
        let nested = TxnRequest {
            compare: vec![],
            success: vec![txn_op(many, vec![])],
            failure: vec![],
        };
        assert_eq!(txn(&nested, 4), Err(Invalid::TooManyOps));
    }

    #[test]
    fn compare_without_key_is_refused_before_the_ops() {
        let cmp = ferrocd_proto::etcdserverpb::Compare::default();
        let bad_sort = RangeRequest {
            key: b"a".to_vec(),
            sort_order: 7,
            ..Default::default()
        };
        let r = TxnRequest {
            compare: vec![cmp.clone()],
            success: vec![RequestOp {
                request: Some(Request::RequestRange(bad_sort)),
            }],
            failure: vec![],
        };
        assert_eq!(txn(&r, 128), Err(Invalid::EmptyKey));
        let nested = TxnRequest {
            compare: vec![],
            success: vec![RequestOp {
                request: Some(Request::RequestTxn(TxnRequest {
                    compare: vec![cmp],
                    success: vec![],
                    failure: vec![],
                })),
            }],
            failure: vec![],
        };
        assert_eq!(txn(&nested, 128), Err(Invalid::EmptyKey));
    }

    #[test]
    fn empty_keys_and_bad_sorts_are_refused() {
        assert_eq!(check(vec![put_op(b"")]), Err(Invalid::EmptyKey));
        let bad_sort = RangeRequest {
            key: b"a".to_vec(),
            sort_order: 7,
            ..Default::default()
        };
        assert_eq!(range(&bad_sort), Err(Invalid::SortOption));
        assert_eq!(
            check(vec![RequestOp { request: None }]),
            Err(Invalid::EmptyOp)
        );
    }
}
