//! Txn compare evaluation, as etcd defines it.

use std::cmp::Ordering;

use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::Compare;
use ferrocd_proto::mvccpb::KeyValue;

/// Whether `cmp` holds for the key-values currently in its range. Every key
/// in the range must satisfy it. An empty range compares against a zero
/// key-value, except that a value comparison on missing keys always fails.
pub fn holds(cmp: &Compare, kvs: &[KeyValue]) -> bool {
    let Ok(target) = CompareTarget::try_from(cmp.target) else {
        // etcd compares nothing for a target it does not know: the
        // comparison behaves as if both sides were equal.
        return result_holds(cmp, Ordering::Equal);
    };
    if kvs.is_empty() {
        if target == CompareTarget::Value {
            return false;
        }
        return holds_for(cmp, target, &KeyValue::default());
    }
    kvs.iter().all(|kv| holds_for(cmp, target, kv))
}

fn holds_for(cmp: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    // A target_union of the wrong kind compares as the zero value, as in etcd.
    let ordering = match target {
        CompareTarget::Value => {
            let want: &[u8] = match &cmp.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        CompareTarget::Version => kv.version.cmp(&int_target(cmp, target)),
        CompareTarget::Create => kv.create_revision.cmp(&int_target(cmp, target)),
        CompareTarget::Mod => kv.mod_revision.cmp(&int_target(cmp, target)),
        CompareTarget::Lease => kv.lease.cmp(&int_target(cmp, target)),
    };
    result_holds(cmp, ordering)
}

fn result_holds(cmp: &Compare, ordering: Ordering) -> bool {
    match CompareResult::try_from(cmp.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}

fn int_target(cmp: &Compare, target: CompareTarget) -> i64 {
    match (target, &cmp.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(v)))
        | (CompareTarget::Create, Some(TargetUnion::CreateRevision(v)))
        | (CompareTarget::Mod, Some(TargetUnion::ModRevision(v)))
        | (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(target: CompareTarget, result: CompareResult, union: TargetUnion) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: b"k".to_vec(),
            range_end: Vec::new(),
            target_union: Some(union),
        }
    }

    fn kv(version: i64, create: i64, modified: i64, value: &[u8], lease: i64) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            create_revision: create,
            mod_revision: modified,
            version,
            value: value.to_vec(),
            lease,
        }
    }

    #[test]
    fn mod_revision_zero_means_key_absent() {
        let c = cmp(
            CompareTarget::Mod,
            CompareResult::Equal,
            TargetUnion::ModRevision(0),
        );
        assert!(holds(&c, &[]));
        assert!(!holds(&c, &[kv(1, 2, 2, b"v", 0)]));
    }

    #[test]
    fn value_compare_on_missing_key_fails_even_for_not_equal() {
        let c = cmp(
            CompareTarget::Value,
            CompareResult::NotEqual,
            TargetUnion::Value(b"x".to_vec()),
        );
        assert!(!holds(&c, &[]));
        assert!(holds(&c, &[kv(1, 2, 2, b"v", 0)]));
    }

    #[test]
    fn every_result_kind_orders_like_etcd() {
        let k = [kv(3, 2, 5, b"m", 7)];
        let version = |r| cmp(CompareTarget::Version, r, TargetUnion::Version(3));
        assert!(holds(&version(CompareResult::Equal), &k));
        assert!(!holds(&version(CompareResult::NotEqual), &k));
        assert!(holds(
            &cmp(
                CompareTarget::Create,
                CompareResult::Less,
                TargetUnion::CreateRevision(3)
            ),
            &k
        ));
        assert!(holds(
            &cmp(
                CompareTarget::Mod,
                CompareResult::Greater,
                TargetUnion::ModRevision(4)
            ),
            &k
        ));
        assert!(holds(
            &cmp(
                CompareTarget::Lease,
                CompareResult::Equal,
                TargetUnion::Lease(7)
            ),
            &k
        ));
        assert!(holds(
            &cmp(
                CompareTarget::Value,
                CompareResult::Greater,
                TargetUnion::Value(b"a".to_vec())
            ),
            &k
        ));
        assert!(holds(
            &cmp(
                CompareTarget::Value,
                CompareResult::Less,
                TargetUnion::Value(b"z".to_vec())
            ),
            &k
        ));
    }

    #[test]
    fn range_compare_requires_every_key() {
        let c = cmp(
            CompareTarget::Version,
            CompareResult::Greater,
            TargetUnion::Version(1),
        );
        assert!(holds(&c, &[kv(2, 1, 1, b"", 0), kv(3, 1, 1, b"", 0)]));
        assert!(!holds(&c, &[kv(2, 1, 1, b"", 0), kv(1, 1, 1, b"", 0)]));
    }

    #[test]
    fn unknown_target_compares_as_equal() {
        let c = Compare {
            target: 7,
            ..cmp(
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(100),
            )
        };
        assert!(holds(&c, &[kv(1, 2, 2, b"v", 0)]));
        assert!(holds(&c, &[]));
        let c = Compare {
            result: CompareResult::NotEqual as i32,
            ..c
        };
        assert!(!holds(&c, &[kv(1, 2, 2, b"v", 0)]));
    }

    #[test]
    fn mismatched_target_union_compares_as_zero() {
        let c = cmp(
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::ModRevision(9),
        );
        assert!(holds(&c, &[]));
        assert!(!holds(&c, &[kv(1, 2, 2, b"v", 0)]));
    }
}
