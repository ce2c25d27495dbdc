#!/usr/bin/env bash
# `make down`: takes down what `make up` (scripts/up.sh) started: the examples' namespace while
# the operator still runs (it releases what it owns), the Helm release, its namespace, then the
# local cluster (e2e/cluster/runnel-cluster down). Running it again when all is down does nothing.
#
#   scripts/down.sh [--keep-cluster]   --keep-cluster: leave the (local or RUNNEL_KUBECONFIG) cluster up
#
# Environment: RUNNEL_OPERATOR_NAMESPACE, RUNNEL_NAMESPACE, RUNNEL_KUBECONFIG as for scripts/up.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
OPERATOR_NS=${RUNNEL_OPERATOR_NAMESPACE:-runnel-system}
NS=${RUNNEL_NAMESPACE:-events}
RELEASE=runnel
KEEP_CLUSTER=no
case ${1:-} in
  --keep-cluster) KEEP_CLUSTER=yes ;;
  "") ;;
  *) echo "usage: scripts/down.sh [--keep-cluster]" >&2; exit 2 ;;
esac

say() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }

running=yes
if [[ -n ${RUNNEL_KUBECONFIG:-} ]]; then
  export KUBECONFIG=$RUNNEL_KUBECONFIG
  KEEP_CLUSTER=yes
else
  ((EUID == 0)) || { echo "down: error: run as root (the local cluster needs root)" >&2; exit 1; }
  if e2e/cluster/runnel-cluster status >/dev/null 2>&1; then
    eval "$(e2e/cluster/runnel-cluster env)"
  else
    running=no
  fi
fi

if [[ $running == yes ]]; then
  say "kubectl delete namespace $NS"
  kubectl delete namespace "$NS" --ignore-not-found --timeout=180s >/dev/null
  say "helm uninstall $RELEASE -n $OPERATOR_NS"
  if helm status "$RELEASE" -n "$OPERATOR_NS" >/dev/null 2>&1; then
    helm uninstall "$RELEASE" -n "$OPERATOR_NS" --wait --timeout 180s >/dev/null
  fi
  say "kubectl delete namespace $OPERATOR_NS"
  kubectl delete namespace "$OPERATOR_NS" --ignore-not-found --timeout=180s >/dev/null
fi
if [[ $KEEP_CLUSTER == no ]]; then
  say "local cluster: e2e/cluster/runnel-cluster down"
  e2e/cluster/runnel-cluster down
fi
say "down"
