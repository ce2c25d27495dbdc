# shellcheck shell=bash
# build_image NAME:TAG ROOTFS_DIR OUT.tar [ENTRYPOINT...]
#
# Packs ROOTFS_DIR as a one-layer OCI image named NAME:TAG (e.g. runnel.local/pause:3.10) and
# writes it as an OCI image-layout tar that `ctr -n k8s.io images import OUT.tar` loads under
# that very name: the layout's `org.opencontainers.image.ref.name` is the full name, which
# containerd's importer takes as is. ENTRYPOINT, when given, becomes the image's entrypoint.
# Files keep their modes and owners. Uses Debian's `umoci` (0.4.7). Source this file, then call
# the function; it prints nothing on success.
build_image() {
  local name=$1 rootfs=$2 out=$3
  shift 3
  if [[ $name != *:* || $name == *:latest ]]; then
    echo "build_image: '$name' needs a tag other than latest (pods use imagePullPolicy Never/IfNotPresent)" >&2
    return 1
  fi
  if [[ ! -d $rootfs ]]; then
    echo "build_image: $rootfs is not a directory" >&2
    return 1
  fi
  if ! command -v umoci >/dev/null; then
    echo "build_image: umoci is missing: apt-get install -y --no-install-recommends umoci" >&2
    return 1
  fi
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/runnel-image.XXXXXX") || return 1
  (
    set -euo pipefail
    image="$work/layout:$name"
    umoci init --layout "$work/layout"
    umoci new --image "$image"
    # unpack + repack rather than `umoci insert`: 0.4.7's insert writes a layer whose tar stream
    # lacks the last file's padding and the end-of-archive blocks.
    umoci unpack --image "$image" "$work/bundle" >/dev/null
    cp -a "$rootfs/." "$work/bundle/rootfs/"
    umoci repack --image "$image" "$work/bundle"
    config=(--os linux --architecture amd64 --config.workingdir / --no-history)
    for arg in "$@"; do config+=(--config.entrypoint "$arg"); done
    umoci config --image "$image" "${config[@]}"
    umoci gc --layout "$work/layout"
    mkdir -p "$(dirname "$out")"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
      -C "$work/layout" -cf "$out.partial" .
    mv "$out.partial" "$out"
  )
  local rc=$?
  rm -rf "$work"
  return $rc
}
