#!/usr/bin/env bash
# Fails with the command that installs whatever the build (and, with --test, the tests) need
# but is missing.
set -euo pipefail
missing=0
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "missing: $1 — install it with: $2" >&2
    missing=1
  fi
}
need cargo "curl https://sh.rustup.rs -sSf | sh -s -- -y --profile minimal (or your distribution's rustup)"
need cc "apt-get install -y build-essential"
if [ "${1:-}" = "--test" ]; then
  # The operator's tests build and run a real Kubernetes control plane.
  need go "apt-get install -y golang (Go >= 1.26; builds the pinned Kubernetes components for the tests)"
  need openssl "apt-get install -y openssl"
  need setpriv "apt-get install -y util-linux"
  # The smoke run of `make bench-peers`: Kafka from its jars.
  need java "apt-get install -y openjdk-17-jre-headless"
  need mvn "apt-get install -y maven"
fi
if command -v cargo >/dev/null 2>&1; then
  cargo fmt --version >/dev/null 2>&1 || { echo "missing: rustfmt — install it with: rustup component add rustfmt" >&2; missing=1; }
  cargo clippy --version >/dev/null 2>&1 || { echo "missing: clippy — install it with: rustup component add clippy" >&2; missing=1; }
fi
exit $missing
