#!/usr/bin/env bash
# `make e2e-kind`: the Helm journey (e2e/tests/helm_journey/, the same test as on the local
# cluster) on a kind cluster, with the images built by Docker from the repo's Dockerfile.
#
#   e2e/kind/run.sh            create the cluster (e2e/kind/cluster.yaml), build and load the
#                              images, run the test, delete the cluster
#   KEEP_CLUSTER=1 e2e/kind/run.sh   leave the kind cluster up afterwards
#
# Needs docker, kind, kubectl, helm and sudo (a route from the host to the pods and Services).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
NAME=${KIND_CLUSTER_NAME:-runnel-e2e}
CARGO=${CARGO:-cargo}
TEST=helm_journey

die() { printf 'e2e-kind: error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "missing $1: $2"; }
need docker "install Docker: curl -fsSL https://get.docker.com | sh"
need kind "go install sigs.k8s.io/kind@v0.31.0 (or https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
need kubectl "https://kubernetes.io/docs/tasks/tools/ (or e2e/tools/build-tools.sh kubernetes)"
need helm "curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash"
docker info >/dev/null 2>&1 || die "docker does not answer: start it (sudo systemctl start docker)"

VERSION=$("$CARGO" metadata --format-version 1 --no-deps --manifest-path Cargo.toml |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "runnel-operator"))')

for target in broker operator; do
  docker build --target "$target" -t "runnel.dev/runnel-$target:$VERSION" .
done

if ! kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  kind create cluster --name "$NAME" --config e2e/kind/cluster.yaml --wait 120s
fi
[[ -n ${KEEP_CLUSTER:-} ]] || trap 'kind delete cluster --name "$NAME"' EXIT
KUBECONFIG_FILE=$ROOT/target/kind-$NAME.kubeconfig
mkdir -p "$(dirname "$KUBECONFIG_FILE")"
kind get kubeconfig --name "$NAME" >"$KUBECONFIG_FILE"
for target in broker operator; do
  kind load docker-image --name "$NAME" "runnel.dev/runnel-$target:$VERSION"
done

# The host reaches pods and Services (as the journey's CLI and gRPC clients do) through the
# node's container, where kube-proxy programs the Services.
node_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NAME-control-plane")
sudo ip route replace 198.18.0.0/16 via "$node_ip"
sudo ip route replace 198.19.0.0/16 via "$node_ip"

RUNNEL_E2E_KUBECONFIG=$KUBECONFIG_FILE RUNNEL_E2E_IMAGES=preloaded \
  "$CARGO" test -p runnel-e2e --test "$TEST" -- --nocapture
