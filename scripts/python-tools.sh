#!/usr/bin/env bash
# The Python test client's environment: a venv at ${RUNNEL_HOME:-$HOME/.cache/runnel}/python
# with the pinned packages of tests/python/requirements.txt (stock grpcio and its tools).
# Created when missing, re-created when requirements.txt or the system's python3 changed (the
# hash of both is kept in the venv); silent when it is already up to date.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requirements=$root/tests/python/requirements.txt
cache=${RUNNEL_HOME:-$HOME/.cache/runnel}
venv=$cache/python
stamp=$venv/.requirements.sha256

if ! command -v python3 >/dev/null 2>&1; then
  echo "missing: python3 — install it with: apt-get install -y python3 python3-venv" >&2
  exit 1
fi
# Debian's python3 ships venv without ensurepip, and `python3 -m venv` then fails halfway.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "missing: python3's venv module — install it with: apt-get install -y python3-venv" >&2
  exit 1
fi

# The interpreter is part of the key: a venv outlives no upgrade of the python it was made from.
want=$({ sha256sum <"$requirements"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
up_to_date() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c '' >/dev/null 2>&1
}
up_to_date && exit 0

mkdir -p "$cache"
# Two runs at once (make -j, two test shells) must not build the same venv over each other.
exec 9>"$cache/python.lock"
flock 9
up_to_date && exit 0

echo "python-tools: creating $venv from tests/python/requirements.txt" >&2
start=$SECONDS
rm -rf "$venv"
python3 -m venv "$venv"
# Wheels only: a package that would build from source here (grpcio compiles for half an hour)
# fails at once instead, naming the package.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --only-binary=:all: -r "$requirements"
# Written last: a venv whose install failed has no stamp and is made again next time.
echo "$want" >"$stamp"
echo "python-tools: ready in $((SECONDS - start)) s ($("$venv/bin/python" --version))" >&2
