//! etcd's KV semantics on top of [`crate::mvcc`]: what Range, Put,
//! DeleteRange, Txn and Compact do and answer. Applied deterministically by
//! the state machine (writes) or directly on a read view (reads).

pub mod compare;
pub mod validate;

use ferrocd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use ferrocd_proto::etcdserverpb::request_op::Request;
use ferrocd_proto::etcdserverpb::response_op::Response;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use ferrocd_proto::mvccpb::KeyValue;

use crate::mvcc::{KeyRange, MvccError, PinnedView, RangeOptions, ReadTxn, ReadView, WriteTxn};

/// Errors of applying a KV request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum KvError {
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error("key not found")]
    KeyNotFound,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExist,
    /// A write op reached a read-only view; validation should prevent this.
    #[error("write in a read-only transaction")]
    ReadOnly,
    // Later variants go last: apply results cross between members (bincode
    // numbers variants in order).
    /// The NOSPACE alarm is active: nothing that grows the store applies.
    #[error("database space exceeded")]
    NoSpace,
    /// The CORRUPT alarm is active: no write applies.
    #[error("corrupt cluster")]
    Corrupt,
}

/// What KV requests may ask of the rest of the state machine.
pub trait Leases {
    fn exists(&self, id: i64) -> bool;
}

/// No leases exist (until the lease service is wired in).
pub struct NoLeases;

impl Leases for NoLeases {
    fn exists(&self, _id: i64) -> bool {
        false
    }
}

/// A view that can also take writes: the write transaction, or a read
/// view that refuses them (for read-only txns served without raft).
pub trait KvView: ReadView {
    fn compacted_rev(&self) -> i64;
    fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<i64, KvError>;
    fn delete_range(&mut self, range: KeyRange<'_>) -> Result<i64, KvError>;
    fn changed(&self) -> bool;
}

impl KvView for WriteTxn<'_> {
    fn compacted_rev(&self) -> i64 {
        self.compacted()
    }
    fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<i64, KvError> {
        Ok(WriteTxn::put(self, key, value, lease))
    }
    fn delete_range(&mut self, range: KeyRange<'_>) -> Result<i64, KvError> {
        Ok(WriteTxn::delete_range(self, range))
    }
    fn changed(&self) -> bool {
        WriteTxn::changed(self)
    }
}

impl KvView for ReadTxn<'_> {
    fn compacted_rev(&self) -> i64 {
        self.compacted()
    }
    fn put(&mut self, _: &[u8], _: Vec<u8>, _: i64) -> Result<i64, KvError> {
        Err(KvError::ReadOnly)
    }
    fn delete_range(&mut self, _: KeyRange<'_>) -> Result<i64, KvError> {
        Err(KvError::ReadOnly)
    }
    fn changed(&self) -> bool {
        false
    }
}

impl KvView for PinnedView<'_> {
    fn compacted_rev(&self) -> i64 {
        self.compacted()
    }
    fn put(&mut self, _: &[u8], _: Vec<u8>, _: i64) -> Result<i64, KvError> {
        Err(KvError::ReadOnly)
    }
    fn delete_range(&mut self, _: KeyRange<'_>) -> Result<i64, KvError> {
        Err(KvError::ReadOnly)
    }
    fn changed(&self) -> bool {
        false
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Range, as etcd answers it: `count` is the whole range, `more` says the
/// limit cut it, filters and sorting apply after the range is read.
pub fn range(view: &impl ReadView, r: &RangeRequest) -> Result<RangeResponse, KvError> {
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    // Sorting and filtering need everything; otherwise read one past the
    // limit to learn whether there is more.
    let limit = if order != SortOrder::None || filtered || r.limit <= 0 {
        0
    } else {
        r.limit as usize + 1
    };
    let opts = RangeOptions {
        rev: r.revision,
        limit,
        count_only: r.count_only,
    };
    let mut res = view.range(KeyRange::new(&r.key, &r.range_end), opts)?;
    res.kvs.retain(|kv| {
        (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
    });
    let order = if target != SortTarget::Key && order == SortOrder::None {
        SortOrder::Ascend
    } else {
        order
    };
    if order != SortOrder::None {
        // Stable, like the insertion sort etcd's sort.Sort uses on small inputs.
        let key = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            res.kvs.sort_by(|a, b| key(b, a));
        } else {
            res.kvs.sort_by(key);
        }
    }
    let mut more = false;
    if r.limit > 0 && res.kvs.len() > r.limit as usize {
        res.kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut res.kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: header(res.rev),
        kvs: res.kvs,
        more,
        count: res.count as i64,
    })
}

/// Put outside a txn: the lease must exist, then the txn rules apply.
pub fn put(
    view: &mut impl KvView,
    r: &PutRequest,
    leases: &dyn Leases,
) -> Result<PutResponse, KvError> {
    if r.lease != 0 && !leases.exists(r.lease) {
        return Err(KvError::LeaseNotFound);
    }
    put_in_txn(view, r)
}

fn put_in_txn(view: &mut impl KvView, r: &PutRequest) -> Result<PutResponse, KvError> {
    let prev = if r.ignore_value || r.ignore_lease || r.prev_kv {
        view.range(KeyRange::Single(&r.key), RangeOptions::default())?
            .kvs
            .pop()
    } else {
        None
    };
    if (r.ignore_value || r.ignore_lease) && prev.is_none() {
        return Err(KvError::KeyNotFound);
    }
    let value = match (&prev, r.ignore_value) {
        (Some(p), true) => p.value.clone(),
        _ => r.value.clone(),
    };
    let lease = match (&prev, r.ignore_lease) {
        (Some(p), true) => p.lease,
        _ => r.lease,
    };
    let rev = view.put(&r.key, value, lease)?;
    Ok(PutResponse {
        header: header(rev),
        prev_kv: if r.prev_kv { prev } else { None },
    })
}

/// DeleteRange: tombstones every live key in the range.
pub fn delete_range(
    view: &mut impl KvView,
    r: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, KvError> {
    let range = KeyRange::new(&r.key, &r.range_end);
    let prev_kvs = if r.prev_kv {
        view.range(range, RangeOptions::default())?.kvs
    } else {
        Vec::new()
    };
    let deleted = view.delete_range(range)?;
    // The new revision if this or an earlier op of the txn changed
    // anything, else the current one: what the view reports.
    let rev = view.rev();
    Ok(DeleteRangeResponse {
        header: header(rev),
        deleted,
        prev_kvs,
    })
}

/// Whether a txn only reads (then it can be served without raft).
pub fn txn_is_read_only(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(t)) => txn_is_read_only(t),
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
        })
}

/// Txn: every compare (nested ones too) is decided on the state before the
/// txn, then the chosen ops are checked as a whole and only then applied, so
/// a failing txn changes nothing.
pub fn txn(
    view: &mut impl KvView,
    r: &TxnRequest,
    leases: &dyn Leases,
) -> Result<TxnResponse, KvError> {
    let mut path = Vec::new();
    choose_path(&*view, r, &mut path)?;
    let write = !txn_is_read_only(r);
    check_path(&*view, r, &path, &mut 0, write, leases, &mut Vec::new())?;
    let mut cursor = 0;
    let mut resp = apply_path(view, r, &path, &mut cursor)?;
    resp.header = header(view.rev());
    Ok(resp)
}

fn choose_path(view: &impl ReadView, r: &TxnRequest, path: &mut Vec<bool>) -> Result<(), KvError> {
    let mut ok = true;
    for c in &r.compare {
        let kvs = match view.range(KeyRange::new(&c.key, &c.range_end), RangeOptions::default()) {
            Ok(res) => res.kvs,
            Err(_) => {
                ok = false;
                break;
            }
        };
        if !compare::holds(c, &kvs) {
            ok = false;
            break;
        }
    }
    path.push(ok);
    for op in branch(r, ok) {
        if let Some(Request::RequestTxn(t)) = &op.request {
            choose_path(view, t, path)?;
        }
    }
    Ok(())
}

fn branch(r: &TxnRequest, ok: bool) -> &[RequestOp] {
    if ok {
        &r.success
    } else {
        &r.failure
    }
}

/// Checks the ops on `path` before any is applied, so that a txn fails
/// whole or not at all. `deleted_from` collects the start keys of from-key
/// deletes (range_end "\0") met so far in apply order: the duplicate-key
/// check lets a put after one through, as etcd's does, and an
/// `ignore_value`/`ignore_lease` put of a key it removed must fail here,
/// not halfway through applying (where etcd itself panics).
fn check_path(
    view: &impl KvView,
    r: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
    write: bool,
    leases: &dyn Leases,
    deleted_from: &mut Vec<Vec<u8>>,
) -> Result<(), KvError> {
    let ok = path[*cursor];
    *cursor += 1;
    for op in branch(r, ok) {
        match &op.request {
            Some(Request::RequestPut(p)) if write => {
                if p.ignore_value || p.ignore_lease {
                    let found = view.range(KeyRange::Single(&p.key), RangeOptions::default())?;
                    let deleted = deleted_from.iter().any(|start| p.key >= *start);
                    if found.kvs.is_empty() || deleted {
                        return Err(KvError::KeyNotFound);
                    }
                }
                if p.lease != 0 && !leases.exists(p.lease) {
                    return Err(KvError::LeaseNotFound);
                }
            }
            Some(Request::RequestRange(q)) => {
                if q.revision > view.rev() {
                    return Err(MvccError::FutureRevision.into());
                }
                if q.revision != 0 && q.revision < view.compacted_rev() {
                    return Err(MvccError::Compacted.into());
                }
            }
            Some(Request::RequestDeleteRange(d)) if d.range_end == [0] => {
                deleted_from.push(d.key.clone())
            }
            Some(Request::RequestTxn(t)) => {
                check_path(view, t, path, cursor, write, leases, deleted_from)?
            }
            _ => {}
        }
    }
    Ok(())
}

fn apply_path(
    view: &mut impl KvView,
    r: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
) -> Result<TxnResponse, KvError> {
    let ok = path[*cursor];
    *cursor += 1;
    let mut responses = Vec::new();
    for op in branch(r, ok) {
        let response = match &op.request {
            Some(Request::RequestRange(q)) => Some(Response::ResponseRange(range(&*view, q)?)),
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(put_in_txn(view, p)?)),
            Some(Request::RequestDeleteRange(d)) => {
                Some(Response::ResponseDeleteRange(delete_range(view, d)?))
            }
            Some(Request::RequestTxn(t)) => {
                Some(Response::ResponseTxn(apply_path(view, t, path, cursor)?))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        // Nested txns carry an empty header; the caller fills the outer one.
        header: Some(ResponseHeader::default()),
        succeeded: ok,
        responses,
    })
}

/// Compact: drops history before the revision.
pub fn compact(
    txn: &mut WriteTxn<'_>,
    r: &CompactionRequest,
) -> Result<CompactionResponse, KvError> {
    txn.compact(r.revision)?;
    Ok(CompactionResponse {
        header: header(txn.rev()),
    })
}

#[cfg(test)]
mod bad_input_tests;
#[cfg(test)]
mod tests;
