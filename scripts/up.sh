#!/usr/bin/env bash
# `make up`: Runnel on Kubernetes on this host. Starts the local cluster
# (e2e/cluster/runnel-cluster up, or reuses the running one), builds the runnel-broker and
# runnel-operator images and imports them into its node (e2e/images/build-images.sh --import),
# installs the chart (helm upgrade --install runnel charts/runnel) into $RUNNEL_OPERATOR_NAMESPACE,
# applies examples/cluster.yaml, topics.yaml and consumergroup.yaml into $RUNNEL_NAMESPACE,
# waits until the Cluster's brokers and the Topics are Ready and prints what to try next.
# Running it again reuses what is there. `make down` (scripts/down.sh) takes it all down.
#
# Environment:
#   RUNNEL_OPERATOR_NAMESPACE  the Helm release's namespace (default runnel-system)
#   RUNNEL_NAMESPACE           the examples' namespace (default events, as examples/cluster.yaml says)
#   RUNNEL_KUBECONFIG          use this cluster instead of the local one (no runnel-cluster up)
#   RUNNEL_IMAGES=preloaded    the images are in the cluster already: do not build or import them
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
OPERATOR_NS=${RUNNEL_OPERATOR_NAMESPACE:-runnel-system}
NS=${RUNNEL_NAMESPACE:-events}
CLUSTER=events
RELEASE=runnel
CARGO=${CARGO:-cargo}

say() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'up: error: %s\n' "$*" >&2; exit 1; }

if [[ -n ${RUNNEL_KUBECONFIG:-} ]]; then
  export KUBECONFIG=$RUNNEL_KUBECONFIG
  for tool in kubectl helm; do
    command -v "$tool" >/dev/null || die "missing $tool: install it (https://kubernetes.io/docs/tasks/tools/, https://helm.sh/docs/intro/install/)"
  done
else
  ((EUID == 0)) || die "run as root: the local cluster and build-images.sh need root"
  say "local cluster: e2e/cluster/runnel-cluster up"
  e2e/cluster/runnel-cluster up >/dev/null
  # KUBECONFIG and a PATH with the cluster's kubectl and helm.
  eval "$(e2e/cluster/runnel-cluster env)"
fi

VERSION=$("$CARGO" metadata --format-version 1 --no-deps --manifest-path Cargo.toml |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "runnel-operator"))')
TARGET_DIR=$("$CARGO" metadata --format-version 1 --no-deps --manifest-path Cargo.toml |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

if [[ ${RUNNEL_IMAGES:-} == preloaded ]]; then
  say "images runnel.dev/runnel-{broker,operator}:$VERSION: preloaded (RUNNEL_IMAGES=preloaded)"
else
  say "images: e2e/images/build-images.sh --import"
  log=$(mktemp "${TMPDIR:-/tmp}/runnel-up-images.XXXXXX")
  e2e/images/build-images.sh --import >"$log" 2>&1 || { cat "$log" >&2; die "build-images.sh --import failed"; }
  rm -f "$log"
fi
say "the runnel CLI: cargo build --release -p runnel-client --bin runnel"
"$CARGO" build --release -p runnel-client --bin runnel --quiet

say "helm upgrade --install $RELEASE charts/runnel -n $OPERATOR_NS"
helm upgrade --install "$RELEASE" charts/runnel --namespace "$OPERATOR_NS" --create-namespace \
  --set "image.tag=$VERSION" --set image.pullPolicy=IfNotPresent --wait --timeout 180s >/dev/null

say "kubectl apply -n $NS -f examples/{cluster,topics,consumergroup}.yaml"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n "$NS" -f examples/cluster.yaml -f examples/topics.yaml -f examples/consumergroup.yaml >/dev/null

brokers=$(kubectl -n "$NS" get clusters.runnel.dev "$CLUSTER" -o jsonpath='{.spec.brokers}')
say "waiting for the Cluster's $brokers brokers and the Topics to be Ready"
kubectl -n "$NS" wait clusters.runnel.dev/"$CLUSTER" --for=condition=Ready --timeout=300s >/dev/null
kubectl -n "$NS" wait clusters.runnel.dev/"$CLUSTER" --for=jsonpath='{.status.readyBrokers}'="$brokers" --timeout=300s >/dev/null
kubectl -n "$NS" wait topics.runnel.dev --all --for=condition=Ready --timeout=300s >/dev/null

# The client Service: a ClusterIP the host reaches (198.19.0.0/16 on the local cluster).
ip=$(kubectl -n "$NS" get service "$CLUSTER" -o jsonpath='{.spec.clusterIP}')
[[ -n $ip ]] || die "the Service $NS/$CLUSTER has no ClusterIP"
BOOTSTRAP=$ip:9092
for _ in $(seq 1 60); do
  "$TARGET_DIR/release/runnel" --bootstrap "$BOOTSTRAP" topic list >/dev/null 2>&1 && break
  sleep 1
done
"$TARGET_DIR/release/runnel" --bootstrap "$BOOTSTRAP" topic list >/dev/null ||
  die "the brokers do not answer on $BOOTSTRAP"

cat <<MSG

Runnel is up on Kubernetes in $(($(date +%s) - T0)) s: operator in namespace $OPERATOR_NS, Cluster $CLUSTER
with $brokers brokers and its Topics in namespace $NS, bootstrap $BOOTSTRAP. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):$(dirname "$(command -v helm)"):$TARGET_DIR/release:\$PATH
  kubectl get runnel -n $NS
  kubectl describe rcl $CLUSTER -n $NS
  export RUNNEL_BOOTSTRAP=$BOOTSTRAP
  runnel topic describe payments
  printf 'p1:paid\np2:refunded\n' | runnel produce payments --key-separator :
  runnel consume payments --group payments-processor --from-beginning --timeout-ms 2000
  kubectl get rcg -n $NS
make down takes it all down.
MSG
