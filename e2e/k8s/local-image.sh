#!/usr/bin/env bash
# Builds the ferrocd image from host-built binaries and imports it into the
# local node's containerd (namespace k8s.io), offline, in seconds:
#
#   e2e/k8s/local-image.sh BIN_DIR IMAGE     e.g. target/debug localhost/ferrocd:e2e
#
# BIN_DIR holds `ferrocd` and `ferrocd-operator` (debug builds are fine: their
# debug info is stripped here). Needs the node's dockerd and ctr (node-up.sh),
# objcopy and ldd. Pods must not pull it: use a tag other than `latest` with
# imagePullPolicy IfNotPresent, or Never.
set -euo pipefail
bin_dir=$1 image=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=$work/base ctx=$work/ctx
mkdir -p "$base/etc" "$base/tmp" "$base/var/lib/ferrocd" "$ctx"

for bin in ferrocd ferrocd-operator; do
  objcopy --strip-debug "$bin_dir/$bin" "$ctx/$bin"
done
# Every library the binaries load and the loader itself, at the paths the
# binaries look for them (-L: the file, not a symlink into the host).
ldd "$ctx/ferrocd" "$ctx/ferrocd-operator" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(0x/ {print $1}' |
  sort -u | while read -r lib; do
  cp -L --parents "$lib" "$base/"
done
echo 'root:x:0:0:root:/root:/sbin/nologin' >"$base/etc/passwd"
echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >>"$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$base/etc/group"
chmod 1777 "$base/tmp"
chown 65532:65532 "$base/var/lib/ferrocd"
chmod 0700 "$base/var/lib/ferrocd"

base_image=localhost/ferrocd-base:local
tar -C "$base" --numeric-owner -c . | docker import - "$base_image" >/dev/null
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base_image" \
  -f "$here/Dockerfile.local" -t "$image" "$ctx" >/dev/null
docker save "$image" | ctr -n k8s.io images import - >/dev/null
echo "$image"
