//! Which key ranges a role's permissions cover, and which accesses a
//! request needs: pure functions, as etcd's `range_perm_cache.go` and
//! `apply_auth.go` decide them.
//!
//! A permission is the half-open interval `[key, range_end)`, where an
//! empty `range_end` means the single key and `"\0"` means "every key from
//! `key` on". A single-key request is allowed when one interval holds the
//! key; a range request when the intervals together cover the whole range
//! without a gap.

use ferrocd_proto::authpb::permission::Type as PermType;
use ferrocd_proto::authpb::Permission;
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, TxnRequest};

/// Read or write: what one access needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// One access a request makes: `kind` on `[key, range_end)` (etcd's
/// encoding of ranges, empty `range_end` for one key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub kind: Kind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Access {
    fn new(kind: Kind, key: &[u8], range_end: &[u8]) -> Self {
        Access {
            kind,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }
    }
}

/// Whether `perms` allow `access`.
pub fn allows(perms: &[Permission], access: &Access) -> bool {
    let mut held: Vec<Interval> = perms
        .iter()
        .filter(|p| grants(p, access.kind))
        .map(|p| Interval::of_permission(&p.key, &p.range_end))
        .collect();
    if access.range_end.is_empty() {
        return held.iter().any(|i| i.holds(&access.key));
    }
    let wanted = Interval::of_request(&access.key, &access.range_end);
    held.sort_by(|a, b| a.begin.cmp(&b.begin));
    covers(&held, &wanted)
}

/// The accesses a Put needs: WRITE on its key, and READ too when it asks
/// for the previous value.
pub fn put(r: &PutRequest) -> Vec<Access> {
    let mut needs = vec![Access::new(Kind::Write, &r.key, &[])];
    if r.prev_kv {
        needs.push(Access::new(Kind::Read, &r.key, &[]));
    }
    needs
}

/// The accesses a DeleteRange needs: WRITE on its range, and READ too when
/// it asks for the deleted values.
pub fn delete_range(r: &DeleteRangeRequest) -> Vec<Access> {
    let mut needs = vec![Access::new(Kind::Write, &r.key, &r.range_end)];
    if r.prev_kv {
        needs.push(Access::new(Kind::Read, &r.key, &r.range_end));
    }
    needs
}

/// The accesses a Txn needs, whichever branch it takes: READ on every
/// compared range, and each op's own, nested txns included. (etcd 3.4
/// skipped nested txns, a hole later releases closed; ferrocd checks them.)
pub fn txn(r: &TxnRequest) -> Vec<Access> {
    let mut needs: Vec<Access> = r
        .compare
        .iter()
        .map(|c| Access::new(Kind::Read, &c.key, &c.range_end))
        .collect();
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Op::RequestRange(q)) => needs.push(Access::new(Kind::Read, &q.key, &q.range_end)),
            Some(Op::RequestPut(p)) => needs.extend(put(p)),
            Some(Op::RequestDeleteRange(d)) => needs.extend(delete_range(d)),
            Some(Op::RequestTxn(t)) => needs.extend(txn(t)),
            None => {}
        }
    }
    needs
}

/// The leases a Txn's puts attach keys to (nested txns included).
pub fn txn_leases(r: &TxnRequest) -> Vec<i64> {
    let mut leases = Vec::new();
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Op::RequestPut(p)) if p.lease != 0 => leases.push(p.lease),
            Some(Op::RequestTxn(t)) => leases.extend(txn_leases(t)),
            _ => {}
        }
    }
    leases
}

/// The accesses revoking a lease (or attaching one more key to it) needs:
/// WRITE on every key attached to it.
pub fn lease_keys(keys: Vec<Vec<u8>>) -> Vec<Access> {
    keys.into_iter()
        .map(|key| Access {
            kind: Kind::Write,
            key,
            range_end: Vec::new(),
        })
        .collect()
}

fn grants(p: &Permission, kind: Kind) -> bool {
    matches!(
        (PermType::try_from(p.perm_type), kind),
        (Ok(PermType::Readwrite), _)
            | (Ok(PermType::Read), Kind::Read)
            | (Ok(PermType::Write), Kind::Write)
    )
}

/// A range end: a key, or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Infinity,
}

/// `[begin, end)`.
#[derive(Debug, Clone)]
struct Interval {
    begin: Vec<u8>,
    end: End,
}

impl Interval {
    /// A granted permission: one key, a range, or (`"\0"`) all from `key`.
    fn of_permission(key: &[u8], range_end: &[u8]) -> Self {
        let end = match range_end {
            [] => {
                let mut next = key.to_vec();
                next.push(0);
                End::Key(next)
            }
            [0] => End::Infinity,
            end => End::Key(end.to_vec()),
        };
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    /// A requested range (`range_end` not empty).
    fn of_request(key: &[u8], range_end: &[u8]) -> Self {
        let end = match range_end {
            [0] => End::Infinity,
            end => End::Key(end.to_vec()),
        };
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    fn holds(&self, key: &[u8]) -> bool {
        self.begin.as_slice() <= key && End::Key(key.to_vec()) < self.end
    }
}

/// Whether `held` (sorted by begin) covers `wanted` without a gap.
fn covers(held: &[Interval], wanted: &Interval) -> bool {
    let mut reached = End::Key(wanted.begin.clone());
    for i in held {
        if reached >= wanted.end {
            break;
        }
        if i.end <= End::Key(wanted.begin.clone()) {
            continue;
        }
        if End::Key(i.begin.clone()) > reached {
            return false;
        }
        if i.end > reached {
            reached = i.end.clone();
        }
    }
    reached >= wanted.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{Compare, RangeRequest, RequestOp};

    fn perm(kind: PermType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    fn read(key: &str, end: &str) -> Access {
        Access::new(Kind::Read, key.as_bytes(), end.as_bytes())
    }

    fn write(key: &str, end: &str) -> Access {
        Access::new(Kind::Write, key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn a_single_key_permission_allows_only_that_key() {
        let perms = [perm(PermType::Read, "foo", "")];
        assert!(allows(&perms, &read("foo", "")));
        assert!(!allows(&perms, &read("foo0", "")));
        assert!(!allows(&perms, &read("fo", "")));
    }

    #[test]
    fn a_prefix_permission_allows_keys_and_ranges_inside_it() {
        // etcdctl role grant-permission r read /a/ --prefix: [/a/, /a0)
        let perms = [perm(PermType::Read, "/a/", "/a0")];
        assert!(allows(&perms, &read("/a/x", "")));
        assert!(allows(&perms, &read("/a/", "/a0")));
        assert!(allows(&perms, &read("/a/b", "/a/c")));
        assert!(!allows(&perms, &read("/a/", "/b")));
        assert!(!allows(&perms, &read("/b", "")));
    }

    #[test]
    fn a_from_key_permission_reaches_past_every_key() {
        let perms = [perm(PermType::Read, "m", "\0")];
        assert!(allows(&perms, &read("zzz", "")));
        assert!(allows(&perms, &read("n", "\0")));
        assert!(!allows(&perms, &read("a", "\0")));
        assert!(!allows(&perms, &read("l", "")));
    }

    #[test]
    fn ranges_are_covered_by_adjacent_permissions_but_not_across_a_gap() {
        let perms = [
            perm(PermType::Read, "a", "c"),
            perm(PermType::Read, "c", "e"),
        ];
        assert!(allows(&perms, &read("a", "e")));
        assert!(allows(&perms, &read("b", "d")));
        assert!(!allows(&perms, &read("a", "f")));
        let gap = [
            perm(PermType::Read, "a", "c"),
            perm(PermType::Read, "d", "e"),
        ];
        assert!(!allows(&gap, &read("a", "e")));
        assert!(allows(&gap, &read("d", "e")));
    }

    #[test]
    fn overlapping_permissions_extend_each_other() {
        let perms = [
            perm(PermType::Read, "a", "z"),
            perm(PermType::Read, "b", "c"),
            perm(PermType::Read, "y", "\0"),
        ];
        assert!(allows(&perms, &read("a", "\0")));
    }

    #[test]
    fn read_does_not_grant_write_and_readwrite_grants_both() {
        let perms = [perm(PermType::Read, "k", "")];
        assert!(!allows(&perms, &write("k", "")));
        let perms = [perm(PermType::Write, "k", "")];
        assert!(!allows(&perms, &read("k", "")));
        assert!(allows(&perms, &write("k", "")));
        let perms = [perm(PermType::Readwrite, "k", "")];
        assert!(allows(&perms, &read("k", "")) && allows(&perms, &write("k", "")));
    }

    #[test]
    fn no_permissions_allow_nothing() {
        assert!(!allows(&[], &read("k", "")));
        assert!(!allows(&[], &read("a", "b")));
    }

    fn op(request: Op) -> RequestOp {
        RequestOp {
            request: Some(request),
        }
    }

    #[test]
    fn a_txn_needs_its_compares_and_both_branches_recursively() {
        let inner = TxnRequest {
            success: vec![op(Op::RequestDeleteRange(DeleteRangeRequest {
                key: b"d".to_vec(),
                range_end: b"e".to_vec(),
                prev_kv: true,
            }))],
            ..Default::default()
        };
        let t = TxnRequest {
            compare: vec![Compare {
                key: b"c".to_vec(),
                ..Default::default()
            }],
            success: vec![op(Op::RequestPut(PutRequest {
                key: b"p".to_vec(),
                ..Default::default()
            }))],
            failure: vec![
                op(Op::RequestRange(RangeRequest {
                    key: b"r".to_vec(),
                    ..Default::default()
                })),
                op(Op::RequestTxn(inner)),
            ],
        };
        assert_eq!(
            txn(&t),
            vec![
                read("c", ""),
                write("p", ""),
                read("r", ""),
                write("d", "e"),
                read("d", "e"),
            ]
        );
    }

    #[test]
    fn prev_kv_adds_a_read() {
        let p = PutRequest {
            key: b"k".to_vec(),
            prev_kv: true,
            ..Default::default()
        };
        assert_eq!(put(&p), vec![write("k", ""), read("k", "")]);
    }
}
