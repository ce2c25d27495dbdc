#!/usr/bin/env bash
# Builds Runnel's container images without Docker: OCI archives of runnel-broker and
# runnel-operator made with umoci from the release binaries, with the content of the Dockerfile's
# runtime stages (the binary, its shared libraries incl. the loader, CA certificates, the
# non-root user runnel 65532:65532; the same user, entrypoint, environment, ports and volume).
# Then imports them into the local cluster's containerd when it is up.
#
# usage: e2e/images/build-images.sh [--import | --no-import] [--out DIR]
#   (default)     build; import when the local cluster's containerd answers, else say so
#   --import      build and import; fails (before building) when the cluster is not up
#   --no-import   build only
#   --out DIR     where the archives go (default: target/images)
#
# Images: runnel.dev/runnel-broker:VERSION and runnel.dev/runnel-operator:VERSION, VERSION being
# the workspace's version (never `latest`: the kubelet would then always try to pull).
#
# Environment:
#   RUNNEL_CONTAINERD_SOCKET  containerd socket of the local cluster
#                             (default: ${RUNNEL_HOME:-~/.cache/runnel}/cluster/containerd/containerd.sock)
#   CONTAINERD_SNAPSHOTTER    snapshotter `ctr images import` unpacks into (ctr's own variable)
#   SOURCE_DATE_EPOCH         timestamp of the images' files and config (default: HEAD's commit time)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNNEL_HOME=${RUNNEL_HOME:-$HOME/.cache/runnel}
SOCKET=${RUNNEL_CONTAINERD_SOCKET:-$RUNNEL_HOME/cluster/containerd/containerd.sock}
CARGO=${CARGO:-cargo}
REGISTRY=runnel.dev
# The user the Dockerfile creates (distroless' "nonroot" id).
RUNNEL_UID=65532
RUNNEL_GID=65532
# debian:bookworm-slim's PATH, which the Dockerfile's images inherit.
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-images: error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '/^# usage:/,/^#   --out/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

IMPORT=auto
OUT=
while (($#)); do
  case $1 in
    --import) IMPORT=yes ;;
    --no-import) IMPORT=no ;;
    --out) (($# > 1)) || die "--out needs a directory"; OUT=$2; shift ;;
    --out=*) OUT=${1#--out=} ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
  shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/runnel-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- tools --------------------------------------------------------------------------------------

((EUID == 0)) || die "run as root: the image layer keeps file owners (root, and runnel for /var/lib/runnel), which umoci records only as root (the local cluster needs root too)"

# The image tools come from Debian; install them when missing (a few packages, no recommends).
apt_install() {
  command -v apt-get >/dev/null || die "missing $*; install with your distribution's package manager"
  log "installing $* (apt-get install -y --no-install-recommends $*)"
  # A stale package list is the common reason an install fails on a fresh machine.
  apt-get install -y --no-install-recommends "$@" >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends "$@" >&2; } \
    || die "could not install $*: run apt-get update && apt-get install -y --no-install-recommends $*"
}
missing=()
command -v umoci >/dev/null || missing+=(umoci)
command -v jq >/dev/null || missing+=(jq)
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"
command -v "$CARGO" >/dev/null || die "missing cargo: run scripts/check-tools.sh for how to install it"
for t in ldd tar flock; do
  command -v "$t" >/dev/null || die "missing $t: apt-get install -y libc-bin tar util-linux"
done

# --- the local cluster's containerd -------------------------------------------------------------

[[ $SOCKET == /* ]] || SOCKET=$PWD/$SOCKET # ctr wants an absolute path
CTR=
cluster_up() {
  [[ -S $SOCKET ]] || return 1
  if [[ -z $CTR ]]; then
    # The ctr that belongs to the cluster's containerd (pinned, cached by build-tools.sh; a no-op
    # when cached, and it is cached whenever the cluster has been started).
    local dir
    dir=$("$ROOT/e2e/tools/build-tools.sh" containerd 2>"$WORK/build-tools.log" | tail -n 1) \
      || die "e2e/tools/build-tools.sh containerd failed:"$'\n'"$(cat "$WORK/build-tools.log")"
    CTR=$dir/ctr
  fi
  "$CTR" -a "$SOCKET" version >/dev/null 2>&1
}
not_up_message() {
  # shellcheck disable=SC2016 # the backquotes are literal: commands to type
  printf 'the local cluster is not up (no containerd answers on %s): start it with `make cluster`, then run `make images` again to import the images (or set RUNNEL_CONTAINERD_SOCKET)\n' "$SOCKET"
}
if [[ $IMPORT == yes ]] && ! cluster_up; then
  die "import requested, but $(not_up_message)"
fi

# --- release binaries ---------------------------------------------------------------------------

metadata=$("$CARGO" metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml")
VERSION=$(jq -r '.packages[] | select(.name == "runnel-broker") | .version' <<<"$metadata")
TARGET_DIR=$(jq -r '.target_directory' <<<"$metadata")
[[ -n $VERSION && $VERSION != latest ]] || die "no usable workspace version ('$VERSION') in $ROOT/Cargo.toml"
OUT=${OUT:-$TARGET_DIR/images}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log "building the release binaries (cargo build --release -p runnel-broker -p runnel-operator --bins)"
(cd "$ROOT" && "$CARGO" build --release -p runnel-broker -p runnel-operator --bins)

if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# One image build at a time per output directory.
exec 9>"$OUT/.lock"
flock 9

# --- image contents -----------------------------------------------------------------------------

# copy_closure BINARY ROOTFS: the shared libraries BINARY links, and the loader, at the paths
# ldd names (the loader's path is the one written into the binary; the others are in the
# loader's default search path, so the image needs no ld.so.cache).
copy_closure() {
  local bin=$1 rootfs=$2 out lib
  if ! out=$(ldd "$bin" 2>&1); then
    # A static binary has nothing to bring along.
    grep -qE 'not a dynamic executable|statically linked' <<<"$out" && return 0
    die "ldd $bin failed: $out"
  fi
  if grep -q 'not found' <<<"$out"; then
    die "$bin links libraries this machine lacks:"$'\n'"$out"
  fi
  while read -r lib; do
    [[ -n $lib ]] || continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
}

# populate ROOTFS BINARY [DATA_DIR]: what the Dockerfile's runtime stage plus its target hold.
populate() {
  local rootfs=$1 bin=$2 data_dir=${3:-}
  install -d -m 0755 "$rootfs"/{etc,usr/local/bin,etc/ssl/certs}
  install -d -m 1777 "$rootfs/tmp"
  install -m 0755 "$TARGET_DIR/release/$bin" "$rootfs/usr/local/bin/$bin"
  copy_closure "$rootfs/usr/local/bin/$bin" "$rootfs"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # As `groupadd --system --gid 65532 runnel; useradd --system --uid 65532 ...` leave them.
  printf '%s\n' "root:x:0:0:root:/root:/usr/sbin/nologin" \
    "runnel:x:$RUNNEL_UID:$RUNNEL_GID::/var/lib/runnel:/usr/sbin/nologin" >"$rootfs/etc/passwd"
  printf '%s\n' "root:x:0:" "runnel:x:$RUNNEL_GID:" >"$rootfs/etc/group"
  printf '%s\n' "passwd: files" "group: files" "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
  chmod 0644 "$rootfs"/etc/{passwd,group,nsswitch.conf}
  chown -R 0:0 "$rootfs"
  if [[ -n $data_dir ]]; then
    install -d -o "$RUNNEL_UID" -g "$RUNNEL_GID" -m 0750 "$rootfs$data_dir"
  fi
  # Same file times on every build: the layer then depends on the content only.
  find "$rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

# build_image NAME DATA_DIR [umoci config flags...]: one OCI archive, $OUT/NAME.tar.
build_image() {
  local name=$1 data_dir=$2
  shift 2
  local ref="$REGISTRY/$name:$VERSION"
  local layout="$WORK/$name/oci" bundle="$WORK/$name/bundle"
  log "image $ref"
  mkdir -p "$WORK/$name"
  umoci init --layout "$layout"
  umoci new --image "$layout:$VERSION"
  umoci unpack --image "$layout:$VERSION" "$bundle" >/dev/null
  populate "$bundle/rootfs" "$name" "$data_dir"
  # One layer with everything; the config (with its volume) comes after the repack, because
  # repack leaves volume paths out of the layer.
  umoci repack --image "$layout:$VERSION" \
    --history.created "$CREATED" --history.created_by "e2e/images/build-images.sh: $name $VERSION, its shared libraries, CA certificates, user runnel" \
    "$bundle"
  umoci config --image "$layout:$VERSION" \
    --created "$CREATED" --history.created "$CREATED" \
    --history.created_by "e2e/images/build-images.sh: image config of $name" \
    --os linux --architecture amd64 \
    --config.user "$RUNNEL_UID:$RUNNEL_GID" \
    --config.entrypoint "/usr/local/bin/$name" \
    --config.workingdir / \
    --config.env "PATH=$IMAGE_PATH" \
    --config.label "org.opencontainers.image.title=$name" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    "$@"
  umoci gc --layout "$layout"
  # containerd names an imported image after this annotation (ctr import ignores a bare tag).
  local index
  index=$(jq --arg ref "$ref" '.manifests[0].annotations["io.containerd.image.name"] = $ref' "$layout/index.json")
  printf '%s\n' "$index" >"$layout/index.json"
  chmod 0644 "$layout/index.json"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$layout" -cf "$OUT/$name.tar.tmp" oci-layout index.json blobs
  mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
  rm -rf "${WORK:?}/$name"
}

build_image runnel-broker /var/lib/runnel \
  --config.env RUNNEL_DATA_DIR=/var/lib/runnel \
  --config.env RUNNEL_METRICS_LISTEN=0.0.0.0:9644 \
  --config.volume /var/lib/runnel \
  --config.exposedports 9092/tcp \
  --config.exposedports 9644/tcp
build_image runnel-operator "" \
  --config.exposedports 8080/tcp

for name in runnel-broker runnel-operator; do
  printf '%s\t%s\t%s\n' "$REGISTRY/$name:$VERSION" "$(du -h "$OUT/$name.tar" | cut -f1)" "$OUT/$name.tar"
done

# --- import -------------------------------------------------------------------------------------

case $IMPORT in
  no)
    log "built; not imported (--no-import)"
    ;;
  auto)
    if cluster_up; then
      IMPORT=yes
    else
      log "built; not imported: $(not_up_message)"
    fi
    ;;
esac
if [[ $IMPORT == yes ]]; then
  for name in runnel-broker runnel-operator; do
    log "importing $REGISTRY/$name:$VERSION into containerd at $SOCKET (namespace k8s.io)"
    "$CTR" -a "$SOCKET" -n k8s.io images import "$OUT/$name.tar" >&2
    "$CTR" -a "$SOCKET" -n k8s.io images ls -q "name==$REGISTRY/$name:$VERSION" | grep -qx "$REGISTRY/$name:$VERSION" \
      || die "containerd does not list $REGISTRY/$name:$VERSION after the import"
  done
  log "imported into the local cluster: pods can use the images with imagePullPolicy IfNotPresent"
fi
