//! The workloads `compare` runs and their sizes: the default fits in a few
//! minutes on 2 cores; `--quick` only proves each one runs.

use crate::workload::lease::LeaseArgs;
use crate::workload::mixed::MixedArgs;
use crate::workload::put::PutArgs;
use crate::workload::range::RangeArgs;
use crate::workload::txn_put::{Shape, TxnPutArgs};
use crate::workload::watch::WatchArgs;
use crate::workload::{Consistency, Workload};

/// One row of the comparison.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub clients: usize,
    pub conns: usize,
    pub total: u64,
    pub workload: Workload,
}

/// Keys the `put` workload writes: `--put-keys`, or 100000 (300 with
/// `--quick`).
pub fn put_keys(quick: bool, put_keys: Option<u64>) -> u64 {
    put_keys.unwrap_or(if quick { 300 } else { 100_000 })
}

/// Every workload, sized for a full run or for `--quick`.
pub fn all(quick: bool, put_keys: Option<u64>) -> Vec<Case> {
    // (quick, full) for each size.
    let pick = |q: u64, f: u64| if quick { q } else { f };
    let many = pick(10, 1000) as usize;
    let some = pick(10, 100) as usize;
    let conns = |clients: usize| clients.div_ceil(10).max(1);
    let put_keys = self::put_keys(quick, put_keys);
    let case = |name, clients: usize, total, workload| Case {
        name,
        clients,
        conns: conns(clients),
        total,
        workload,
    };
    let put = |prefix: &str, keys: u64| PutArgs {
        key_size: 64,
        val_size: 256,
        sequential_keys: true,
        key_space_size: keys,
        prefix: prefix.to_string(),
    };
    let range = |consistency, key_count, prefix: &str| RangeArgs {
        consistency,
        key_count,
        limit: 0,
        key_size: 64,
        val_size: 256,
        prefix: prefix.to_string(),
    };
    let txn = |shape| TxnPutArgs {
        shape,
        key_size: 64,
        val_size: 1024,
        key_space_size: pick(50, 1000),
        prefix: "/registry/bench/".to_string(),
    };
    vec![
        case(
            "put-1client",
            1,
            pick(100, 2000),
            Workload::Put(put("put1/", u64::MAX)),
        ),
        case("put", many, put_keys, Workload::Put(put("put/", put_keys))),
        case(
            "range-l",
            some,
            pick(300, 50_000),
            Workload::Range(range(Consistency::L, 1, "range1/")),
        ),
        case(
            "range-s",
            some,
            pick(300, 50_000),
            Workload::Range(range(Consistency::S, 1, "range1/")),
        ),
        case(
            "range-l-100keys",
            some,
            pick(300, 20_000),
            Workload::Range(range(Consistency::L, 100, "range100/")),
        ),
        case(
            "txn-create",
            some,
            pick(300, 20_000),
            Workload::TxnPut(txn(Shape::Create)),
        ),
        case(
            "txn-update",
            some,
            pick(300, 20_000),
            Workload::TxnPut(txn(Shape::Update)),
        ),
        case(
            "watch",
            pick(2, 10) as usize,
            pick(100, 2000),
            Workload::Watch(WatchArgs {
                watchers: pick(5, 100) as usize,
                writers: None,
                key_space_size: 100,
                key_size: 32,
                val_size: 64,
                prefix: "watch/".to_string(),
            }),
        ),
        case(
            "lease",
            some,
            pick(300, 10_000),
            Workload::Lease(LeaseArgs {
                ttl: 600,
                keep_leases: false,
            }),
        ),
        case(
            "mixed-90r",
            some,
            pick(300, 50_000),
            Workload::Mixed(MixedArgs {
                read_ratio: 0.9,
                consistency: Consistency::L,
                key_space_size: pick(100, 10_000),
                key_size: 64,
                val_size: 256,
                prefix: "mixed/".to_string(),
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_and_full_runs_cover_the_same_workloads() {
        let names = |quick| all(quick, None).iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(true), names(false));
    }

    #[test]
    fn quick_runs_are_a_few_hundred_operations_each() {
        assert!(all(true, None).iter().all(|c| c.total <= 300));
    }

    #[test]
    fn the_put_workload_writes_the_requested_number_of_distinct_keys() {
        let put = all(false, Some(1_000_000))
            .into_iter()
            .find(|c| c.name == "put")
            .unwrap();
        let Workload::Put(args) = put.workload else {
            panic!("put is a put")
        };
        assert_eq!((put.total, args.key_space_size), (1_000_000, 1_000_000));
        assert!(args.sequential_keys);
    }
}
