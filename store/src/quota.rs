//! The backend space quota (`--quota-backend-bytes`): how many bytes the
//! state machine's database may occupy, and what a write is estimated to
//! add to it. The member that receives a write compares the two before
//! proposing it (etcd's `backendQuota`); pure functions, unit-tested here.

use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::{PutRequest, TxnRequest};

/// etcd's quota when the flag is 0 or absent: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// The largest quota etcd recommends (8 GiB); a larger one is accepted
/// with a warning, as etcd does.
pub const MAX_QUOTA_BYTES: i64 = 8 * 1024 * 1024 * 1024;
/// etcd's estimate of what a lease adds to the database.
const LEASE_OVERHEAD: i64 = 64;
/// etcd's estimate of what a key's metadata adds to the database.
const KV_OVERHEAD: i64 = 256;

/// The space quota a member enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// A negative `--quota-backend-bytes`: no limit.
    Disabled,
    /// At most this many bytes.
    Bytes(i64),
}

impl Quota {
    /// The quota of `--quota-backend-bytes=value`, read as etcd reads it:
    /// negative disables it, 0 is the 2 GiB default.
    pub fn from_flag(value: i64) -> Quota {
        match value {
            v if v < 0 => Quota::Disabled,
            0 => Quota::Bytes(DEFAULT_QUOTA_BYTES),
            v => Quota::Bytes(v),
        }
    }

    /// Whether a write that adds an estimated `cost` bytes fits beside a
    /// database of `db_size` bytes. A request that adds nothing always
    /// fits (a transaction without puts), as in etcd.
    pub fn allows(&self, db_size: i64, cost: i64) -> bool {
        match *self {
            Quota::Disabled => true,
            _ if cost == 0 => true,
            Quota::Bytes(limit) => db_size.saturating_add(cost) < limit,
        }
    }

    /// The limit in bytes, as Status reports it (`db_size_quota`); 0 when
    /// there is none.
    pub fn limit(&self) -> i64 {
        match *self {
            Quota::Disabled => 0,
            Quota::Bytes(limit) => limit,
        }
    }

    /// The warning etcd logs at start for this quota, if any.
    pub fn warning(&self) -> Option<String> {
        match *self {
            Quota::Disabled => Some("--quota-backend-bytes is negative: the backend quota is disabled".into()),
            Quota::Bytes(limit) if limit > MAX_QUOTA_BYTES => Some(format!(
                "--quota-backend-bytes={limit} exceeds the maximum recommended quota {MAX_QUOTA_BYTES}"
            )),
            Quota::Bytes(_) => None,
        }
    }
}

/// What a put is estimated to add to the database.
pub fn put_cost(r: &PutRequest) -> i64 {
    KV_OVERHEAD + r.key.len() as i64 + r.value.len() as i64
}

/// What a transaction is estimated to add: the puts of its larger branch.
/// Only the transaction's own puts count, not those of nested
/// transactions, as in etcd.
pub fn txn_cost(r: &TxnRequest) -> i64 {
    let branch = |ops: &[ferrocd_proto::etcdserverpb::RequestOp]| -> i64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(p)) => put_cost(p),
                _ => 0,
            })
            .sum()
    };
    branch(&r.success).max(branch(&r.failure))
}

/// What a lease grant is estimated to add.
pub fn lease_grant_cost() -> i64 {
    LEASE_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{RangeRequest, RequestOp};

    fn put(key: &str, value_len: usize) -> PutRequest {
        PutRequest {
            key: key.as_bytes().to_vec(),
            value: vec![b'x'; value_len],
            ..Default::default()
        }
    }

    fn op_put(key: &str, value_len: usize) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(put(key, value_len))),
        }
    }

    fn op_range(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn the_flag_reads_as_etcds() {
        assert_eq!(Quota::from_flag(-1), Quota::Disabled);
        assert_eq!(Quota::from_flag(0), Quota::Bytes(DEFAULT_QUOTA_BYTES));
        assert_eq!(Quota::from_flag(4096), Quota::Bytes(4096));
        assert_eq!(DEFAULT_QUOTA_BYTES, 2_147_483_648);
    }

    #[test]
    fn a_put_costs_its_key_value_and_metadata_overhead() {
        assert_eq!(put_cost(&put("abc", 10)), 256 + 3 + 10);
    }

    #[test]
    fn a_txn_costs_the_puts_of_its_larger_branch_only() {
        let txn = TxnRequest {
            success: vec![op_put("a", 1000), op_range("b")],
            failure: vec![op_put("c", 10), op_put("d", 10)],
            ..Default::default()
        };
        assert_eq!(txn_cost(&txn), 256 + 1 + 1000);
        let failure_larger = TxnRequest {
            success: vec![op_put("a", 1)],
            failure: vec![op_put("c", 10), op_put("d", 10)],
            ..Default::default()
        };
        assert_eq!(txn_cost(&failure_larger), 2 * (256 + 1 + 10));
    }

    #[test]
    fn a_txn_without_puts_costs_nothing() {
        let txn = TxnRequest {
            success: vec![op_range("a")],
            ..Default::default()
        };
        assert_eq!(txn_cost(&txn), 0);
    }

    #[test]
    fn a_write_fits_only_strictly_below_the_limit() {
        let q = Quota::Bytes(1000);
        assert!(q.allows(600, 399));
        assert!(!q.allows(600, 400));
        assert!(!q.allows(2000, 1));
    }

    #[test]
    fn a_write_that_adds_nothing_always_fits() {
        assert!(Quota::Bytes(1000).allows(5000, 0));
    }

    #[test]
    fn a_disabled_quota_allows_anything() {
        assert!(Quota::Disabled.allows(i64::MAX, i64::MAX));
        assert_eq!(Quota::Disabled.limit(), 0);
    }

    #[test]
    fn a_huge_quota_does_not_overflow() {
        assert!(!Quota::Bytes(i64::MAX).allows(i64::MAX - 1, 10));
        assert!(Quota::Bytes(i64::MAX).allows(1, 10));
    }

    #[test]
    fn quotas_above_eight_gib_warn_as_etcd() {
        assert!(Quota::Bytes(MAX_QUOTA_BYTES).warning().is_none());
        assert!(Quota::Bytes(MAX_QUOTA_BYTES + 1).warning().is_some());
        assert!(Quota::Disabled.warning().is_some());
    }
}
