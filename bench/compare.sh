#!/usr/bin/env bash
# Builds release binaries of ferrocd and ferrocd-bench, then runs
# `ferrocd-bench compare` (etcd 3.4 vs ferrocd, side by side on loopback:
# 1 member each, with restart, snapshot save/restore and writes during
# defrag and compaction, then 3-member clusters each).
# Extra arguments go to compare: --quick, --members 1,3, --put-keys N,
# --catchup-keys N, --only put,range-l,
# --skip-checks, --json, ... (ferrocd-bench compare --help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in etcd etcdctl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool not found: apt-get install etcd-server etcd-client (etcd 3.4)" >&2
    exit 1
  fi
done

cargo build --release --bin ferrocd --bin ferrocd-bench
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/ferrocd-bench" compare --ferrocd-bin "$target/release/ferrocd" "$@"
