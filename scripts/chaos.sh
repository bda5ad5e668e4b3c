#!/usr/bin/env bash
# The long version of the randomized fault runs (e2e/tests/chaos.rs): N runs
# per kind, on 3- and 5-member clusters of a release ferrocd and of etcd 3.4.
#
#   scripts/chaos.sh --runs 100 [--secs 5] [--seed 12345]
#
# Membership changes are among the faults too, which the short CI version
# leaves out: members replaced (removed, data deleted, added back empty),
# learners added and promoted, members removed for good. Slow and full
# disks are among them in both (each member's data on a loop device of its
# own; CHAOS_DISK=0 leaves them out).
# Prints one CHAOS line per kind (runs, faults, operations, watch events,
# runs with violations) and, for a failing run, its seed, faults and the
# operations where the linearizability search got stuck, with the minimised
# failing sub-history.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=100 secs=5 seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--secs S] [--seed X]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrocd/target}"
cargo build --release --bin ferrocd
export FERROCD_BIN="$CARGO_TARGET_DIR/release/ferrocd" CHAOS_RUNS=$runs CHAOS_SECS=$secs CHAOS_MEMBERSHIP=1
[ -n "$seed" ] && export CHAOS_SEED=$seed
cargo test --release -p ferrocd-e2e --test chaos -- --nocapture --test-threads=1 histories_under_faults
