#!/usr/bin/env bash
# The local cluster's volume provisioner, started and stopped by runnel-cluster.
#
# For every claim of the StorageClass $STORAGE_CLASS that is Pending and has been given a node
# by the scheduler (annotation `volume.kubernetes.io/selected-node`, the WaitForFirstConsumer
# handshake), it creates a directory $VOLUMES_DIR/pvc-<claim uid> and a `local`
# PersistentVolume bound to that claim (claimRef) with the node's affinity; the PV controller
# then binds the claim and the scheduler lets the pod go on. When a claim is deleted its volume
# becomes Released: the provisioner removes the directory and the PV (reclaim policy Delete).
#
# It reacts to watch events on claims and volumes, and looks again every $RESYNC seconds.
#
# Environment: KUBECTL, KUBECONFIG, VOLUMES_DIR, STORAGE_CLASS, PROVISIONER (the name the
# StorageClass gives), RESYNC (default 10).
set -uo pipefail
: "${KUBECTL:?}" "${KUBECONFIG:?}" "${VOLUMES_DIR:?}" "${STORAGE_CLASS:?}" "${PROVISIONER:?}"
RESYNC=${RESYNC:-10}

log() { printf '%s provisioner: %s\n' "$(date -u +%FT%T.%3NZ)" "$*"; }
# The kubeconfig on the command line, so that `ps` tells these kubectl processes apart.
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=20s "$@"; }

# One pass: provision what waits, remove what was released. Fields are separated by '|',
# which no name, uid, quantity or access mode contains (a tab would collapse empty fields).
reconcile() {
  local claims volumes
  claims=$(k get pvc --all-namespaces -o jsonpath='{range .items[?(@.status.phase=="Pending")]}{.metadata.namespace}|{.metadata.name}|{.metadata.uid}|{.spec.storageClassName}|{.metadata.annotations.volume\.kubernetes\.io/selected-node}|{.spec.resources.requests.storage}|{.spec.accessModes}|{.spec.volumeMode}|{.spec.volumeName}{"\n"}{end}') || return
  volumes=$(k get pv -o jsonpath='{range .items[*]}{.metadata.name}|{.status.phase}|{.metadata.annotations.pv\.kubernetes\.io/provisioned-by}|{.spec.local.path}{"\n"}{end}') || return

  local ns name uid class node size modes mode volname
  while IFS='|' read -r ns name uid class node size modes mode volname; do
    [[ -n $uid && $class == "$STORAGE_CLASS" && -n $node && -z $volname ]] || continue
    if grep -q "^pvc-$uid|" <<<"$volumes"; then continue; fi
    if [[ -n $mode && $mode != Filesystem ]]; then
      log "claim $ns/$name asks for volumeMode $mode; only Filesystem volumes are provided"
      continue
    fi
    provision "$ns" "$name" "$uid" "$node" "${size:-1Gi}" "${modes:-[\"ReadWriteOnce\"]}"
  done <<<"$claims"

  local pv phase by path
  while IFS='|' read -r pv phase by path; do
    [[ $by == "$PROVISIONER" && ( $phase == Released || $phase == Failed ) ]] || continue
    release "$pv" "$path"
  done <<<"$volumes"
}

provision() {
  local ns=$1 name=$2 uid=$3 node=$4 size=$5 modes=$6
  local pv=pvc-$uid dir=$VOLUMES_DIR/pvc-$uid
  if ! mkdir -p "$dir" || ! chmod 0777 "$dir"; then
    log "cannot create $dir"
    return
  fi
  if k create -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  annotations:
    pv.kubernetes.io/provisioned-by: $PROVISIONER
spec:
  storageClassName: $STORAGE_CLASS
  capacity:
    storage: $size
  accessModes: $modes
  volumeMode: Filesystem
  persistentVolumeReclaimPolicy: Delete
  claimRef:
    apiVersion: v1
    kind: PersistentVolumeClaim
    namespace: $ns
    name: $name
    uid: $uid
  local:
    path: $dir
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/hostname
              operator: In
              values: [$node]
EOF
  then
    log "claim $ns/$name: created $pv ($size) in $dir on node $node"
  else
    log "claim $ns/$name: creating $pv failed; will retry"
  fi
}

release() {
  local pv=$1 path=$2
  # Only ever remove a directory of ours.
  if [[ $path == "$VOLUMES_DIR"/pvc-* && $path != *..* ]]; then
    rm -rf -- "$path"
  fi
  if k delete pv "$pv" --wait=false >/dev/null; then
    log "released $pv: removed it and $path"
  fi
}

mkdir -p "$VOLUMES_DIR"
log "watching claims of StorageClass $STORAGE_CLASS; volumes in $VOLUMES_DIR"
while true; do
  # Both watches write one line per change into fd 3; when the API server ends them (its
  # request timeout) the read sees EOF and they are started again.
  exec 3< <(
    "$KUBECTL" --kubeconfig "$KUBECONFIG" get pvc --all-namespaces --watch-only -o name 2>/dev/null &
    "$KUBECTL" --kubeconfig "$KUBECONFIG" get pv --watch-only -o name 2>/dev/null &
    wait
  )
  while true; do
    reconcile
    read -r -t "$RESYNC" -u 3 _
    rc=$?
    if ((rc != 0 && rc <= 128)); then break; fi # EOF: restart the watches
    # Let a burst of events settle into one pass.
    while read -r -t 0.3 -u 3 _; do :; done
  done
  exec 3<&-
  sleep 1
done
