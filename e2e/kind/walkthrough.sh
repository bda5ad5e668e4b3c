#!/usr/bin/env bash
# ferrocd on kind, end to end: build the image, install the operator chart,
# create an EtcdCluster, read and write through its client Service, scale
# 3 -> 5 -> 3 checking the data after each step, delete it all.
# Needs docker, kind, kubectl and helm; see e2e/kind/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Settings, each overridable from the environment. e2e/tests/packaging
# checks these defaults against the example, the chart and the CRD.
KIND_CLUSTER="${KIND_CLUSTER:-ferrocd}"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-ferrocd}"
IMAGE_TAG="${IMAGE_TAG:-dev}"
CHART="${CHART:-charts/ferrocd-operator}"
RELEASE="${RELEASE:-ferrocd-operator}"
OPERATOR_NAMESPACE="${OPERATOR_NAMESPACE:-ferrocd-system}"
EXAMPLE="${EXAMPLE:-examples/etcdcluster-3.yaml}"
CLUSTER="${CLUSTER:-ferrocd}"
NAMESPACE="${NAMESPACE:-ferrocd-demo}"
CRD="${CRD:-etcdclusters.ferrocd.io}"
SCALE_TO="${SCALE_TO:-5}"
WAIT_SECONDS="${WAIT_SECONDS:-300}"
# Empty: the etcd image of kind's own control plane, already on the node.
ETCDCTL_IMAGE="${ETCDCTL_IMAGE:-}"
SKIP_BUILD="${SKIP_BUILD:-0}"
KEEP="${KEEP:-0}"

image="$IMAGE_REPOSITORY:$IMAGE_TAG"
context="kind-$KIND_CLUSTER"
created_cluster=0

step() { printf '\n==> %s\n' "$*" >&2; }

# Prints a command, shell-quoted, then runs it.
run() {
  printf '+' >&2
  printf ' %q' "$@" >&2
  printf '\n' >&2
  "$@"
}

k() { run kubectl --context "$context" "$@"; }

# What a user needs to see when a step fails: the cluster's status and
# events, its pods, and the operator's log.
diagnose() {
  step "Diagnostics"
  kubectl --context "$context" -n "$NAMESPACE" get etcdcluster "$CLUSTER" -o yaml || true
  kubectl --context "$context" -n "$NAMESPACE" get pods,pvc,svc -o wide || true
  kubectl --context "$context" -n "$NAMESPACE" get events --sort-by=.lastTimestamp || true
  kubectl --context "$context" -n "$NAMESPACE" logs -l "app.kubernetes.io/instance=$CLUSTER" \
    --all-containers --prefix --tail=50 || true
  kubectl --context "$context" -n "$OPERATOR_NAMESPACE" logs "deployment/$RELEASE" --tail=100 || true
}

cleanup() {
  local status=$?
  trap - EXIT
  if [ "$status" -ne 0 ] && kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    diagnose
  fi
  if [ "$KEEP" = 1 ]; then
    step "KEEP=1: kind cluster $KIND_CLUSTER kept"
    echo "  kubectl --context $context -n $NAMESPACE get fcd" >&2
    echo "  kind delete cluster --name $KIND_CLUSTER" >&2
  elif [ "$created_cluster" = 1 ]; then
    step "Deleting kind cluster $KIND_CLUSTER (KEEP=1 keeps it)"
    run kind delete cluster --name "$KIND_CLUSTER" || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs etcdctl in a one-shot pod against the client Service and prints its
# output. The ferrocd image is distroless (no shell, no etcdctl), so the
# client comes from an etcd image; running inside the cluster also checks
# the Service's DNS name, the address real clients use.
# A call inside $(...) counts in a copy of etcdctl_runs, so a name can come
# again: each pod is deleted, and gone, before its call returns.
etcdctl_runs=0
etcdctl() {
  etcdctl_runs=$((etcdctl_runs + 1))
  local pod="etcdctl-$$-$etcdctl_runs" phase="" deadline=$((SECONDS + 120))
  printf '+ etcdctl --endpoints=%s' "$endpoint" >&2
  printf ' %q' "$@" >&2
  printf '   (in pod %s)\n' "$pod" >&2
  kubectl --context "$context" -n "$NAMESPACE" run "$pod" --quiet \
    --image="$ETCDCTL_IMAGE" --image-pull-policy=IfNotPresent --restart=Never \
    --env=ETCDCTL_API=3 --command -- \
    /usr/local/bin/etcdctl --endpoints="$endpoint" --command-timeout=15s "$@" >/dev/null ||
    return 1
  while [ "$SECONDS" -lt "$deadline" ]; do
    phase=$(kubectl --context "$context" -n "$NAMESPACE" get pod "$pod" -o jsonpath='{.status.phase}' || true)
    case "$phase" in Succeeded | Failed) break ;; esac
    sleep 1
  done
  kubectl --context "$context" -n "$NAMESPACE" logs "$pod" || true
  kubectl --context "$context" -n "$NAMESPACE" delete pod "$pod" --timeout=60s >/dev/null || true
  if [ "$phase" != Succeeded ]; then
    echo "etcdctl $* did not succeed (pod phase: ${phase:-unknown})" >&2
    return 1
  fi
}

# Fails unless `key` reads back as `want` through the client Service.
expect_value() {
  local key=$1 want=$2 got
  got=$(etcdctl get "$key" --print-value-only)
  if [ "$got" != "$want" ]; then
    echo "$key: expected '$want', read '$got'" >&2
    return 1
  fi
  echo "$key = $got" >&2
}

# Waits until the operator reports `want` members, all ready, for the
# current spec: observedGeneration caught up and phase Running (the
# Available condition alone stays True through a scale step).
wait_for_members() {
  local want=$1 deadline=$((SECONDS + WAIT_SECONDS)) last="" now
  local generation observed phase members ready
  step "Waiting for $want ready members (status.replicas, status.readyReplicas)"
  while :; do
    now=$(kubectl --context "$context" -n "$NAMESPACE" get etcdcluster "$CLUSTER" \
      -o jsonpath='{.metadata.generation}|{.status.observedGeneration}|{.status.phase}|{.status.replicas}|{.status.readyReplicas}' ||
      true)
    IFS='|' read -r generation observed phase members ready <<<"$now"
    if [ "$now" != "$last" ]; then
      echo "  generation=$generation observed=${observed:--} phase=${phase:--} members=${members:--} ready=${ready:--}" >&2
      last=$now
    fi
    if [ "$observed" = "$generation" ] && [ "$phase" = Running ] &&
      [ "$members" = "$want" ] && [ "$ready" = "$want" ]; then
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out after ${WAIT_SECONDS}s waiting for $want ready members" >&2
      return 1
    fi
    sleep 5
  done
  k -n "$NAMESPACE" get etcdcluster "$CLUSTER"
  k -n "$NAMESPACE" get pods -l "app.kubernetes.io/instance=$CLUSTER" -o wide
}

scale() {
  local replicas=$1
  step "Scaling $CLUSTER to $replicas members"
  k -n "$NAMESPACE" patch etcdcluster "$CLUSTER" --type merge -p "{\"spec\":{\"replicas\":$replicas}}"
  wait_for_members "$replicas"
}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is required (see e2e/kind/README.md)" >&2
    exit 1
  }
done

# The example with spec.image pointing at the local image: without it the
# operator would run ghcr.io/ferrocd/ferrocd:<version>, which kind can not
# pull. `patch --local` edits the file offline, no cluster needed.
manifest=$(kubectl patch --local -f "$EXAMPLE" --type merge \
  -p "{\"spec\":{\"image\":\"$image\"}}" -o yaml)
name=$(kubectl patch --local -f "$EXAMPLE" --type merge -p '{}' -o jsonpath='{.metadata.name}')
if [ "$name" != "$CLUSTER" ]; then
  echo "$EXAMPLE creates EtcdCluster '$name', but CLUSTER=$CLUSTER: set CLUSTER=$name" >&2
  exit 1
fi
replicas=$(kubectl patch --local -f "$EXAMPLE" --type merge -p '{}' -o jsonpath='{.spec.replicas}')
endpoint="http://$CLUSTER.$NAMESPACE.svc:2379"

step "1. kind cluster $KIND_CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  echo "reusing the existing kind cluster $KIND_CLUSTER (it is not deleted at the end)" >&2
else
  created_cluster=1
  run kind create cluster --name "$KIND_CLUSTER" --wait 120s
fi
k get nodes -o wide

step "2. Image $image (both binaries, from the Dockerfile)"
if [ "$SKIP_BUILD" = 1 ]; then
  echo "SKIP_BUILD=1: using the existing local image $image" >&2
else
  run docker build -t "$image" .
fi
run kind load docker-image "$image" --name "$KIND_CLUSTER"

step "3. Operator: helm install $RELEASE from $CHART"
run helm upgrade --install "$RELEASE" "$CHART" --kube-context "$context" \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --set "image.repository=$IMAGE_REPOSITORY" --set "image.tag=$IMAGE_TAG" \
  --set image.pullPolicy=IfNotPresent
k wait --for=condition=Established "crd/$CRD" --timeout=60s
k -n "$OPERATOR_NAMESPACE" wait --for=condition=Available "deployment/$RELEASE" --timeout="${WAIT_SECONDS}s"
k -n "$OPERATOR_NAMESPACE" get deployment,pods -l "app.kubernetes.io/instance=$RELEASE"

step "4. EtcdCluster $CLUSTER from $EXAMPLE (replicas: $replicas, image: $image)"
run kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | k apply -f -
printf '%s\n' "$manifest" | k -n "$NAMESPACE" apply -f -
k -n "$NAMESPACE" wait --for=condition=Available "etcdcluster/$CLUSTER" --timeout="${WAIT_SECONDS}s"
wait_for_members "$replicas"
k -n "$NAMESPACE" get svc,pvc -l "app.kubernetes.io/instance=$CLUSTER"

step "5. etcdctl through the client Service $endpoint"
if [ -z "$ETCDCTL_IMAGE" ]; then
  ETCDCTL_IMAGE=$(kubectl --context "$context" -n kube-system get pods -l component=etcd \
    -o jsonpath='{.items[0].spec.containers[0].image}')
  ETCDCTL_IMAGE="${ETCDCTL_IMAGE:-registry.k8s.io/etcd:3.5.16-0}"
fi
echo "etcdctl from $ETCDCTL_IMAGE" >&2
etcdctl put walkthrough/before-scaling "written with $replicas members"
expect_value walkthrough/before-scaling "written with $replicas members"
etcdctl endpoint status -w table
etcdctl member list -w table

if [ "$SCALE_TO" != 0 ]; then
  scale "$SCALE_TO"
  step "6. Data after scaling to $SCALE_TO"
  expect_value walkthrough/before-scaling "written with $replicas members"
  etcdctl put walkthrough/scaled-up "written with $SCALE_TO members"
  etcdctl member list -w table

  scale "$replicas"
  step "7. Data after scaling back to $replicas"
  expect_value walkthrough/before-scaling "written with $replicas members"
  expect_value walkthrough/scaled-up "written with $SCALE_TO members"
  etcdctl endpoint status -w table
else
  step "SCALE_TO=0: scaling skipped"
fi

if [ "$KEEP" = 1 ]; then
  step "KEEP=1: EtcdCluster $CLUSTER kept"
else
  step "8. Deleting EtcdCluster $CLUSTER (the operator removes its finalizer)"
  k -n "$NAMESPACE" delete etcdcluster "$CLUSTER" --timeout="${WAIT_SECONDS}s"
  k -n "$NAMESPACE" get statefulsets,pods,pvc -l "app.kubernetes.io/instance=$CLUSTER"
fi
step "Walkthrough passed"
