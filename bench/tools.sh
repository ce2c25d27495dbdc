#!/usr/bin/env bash
# The peers of `make bench-peers`, installed into ${RUNNEL_HOME:-$HOME/.cache/runnel}/peers:
#   kafka-4.4.0/libs   Apache Kafka 4.4.0's broker and perf tools, the jars of bench/kafka/pom.xml
#                      and all they need, from Maven Central (`mvn dependency:copy-dependencies`,
#                      about 20 s cold);
#   bin/nats-server    NATS Server v2.15.2 and
#   bin/nats           the NATS CLI v0.5.0 (`nats bench`), built from their Go modules with
#                      `go install` (a few minutes cold);
#   python             a venv with bench/requirements.txt (matplotlib, for the charts).
# Each is installed when missing or when what it was made from changed (a stamp keeps the hash);
# silent when up to date. Two runs at once wait on one lock.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${RUNNEL_HOME:-$HOME/.cache/runnel}
peers=$cache/peers
kafka_version=4.4.0
nats_server_version=v2.15.2
natscli_version=v0.5.0
kafka=$peers/kafka-$kafka_version

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "missing: $1 — install it with: $2" >&2
  exit 1
}

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

kafka_want=$(sha256sum <"$root/bench/kafka/pom.xml" | cut -d' ' -f1)
# The versions asked for: a Go upgrade alone does not rebuild them.
nats_want=$(echo "$nats_server_version $natscli_version" | sha256sum | cut -d' ' -f1)
venv=$peers/python
venv_want=$({ sha256sum <"$root/bench/requirements.txt"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
up_to_date() {
  stamp_ok "$kafka/.stamp" "$kafka_want" && stamp_ok "$peers/bin/.stamp" "$nats_want" \
    && [ -x "$peers/bin/nats-server" ] && [ -x "$peers/bin/nats" ] \
    && stamp_ok "$venv/.stamp" "$venv_want" && "$venv/bin/python" -c '' >/dev/null 2>&1
}
up_to_date && exit 0

mkdir -p "$peers"
exec 9>"$peers/.lock"
flock 9
up_to_date && exit 0

if ! stamp_ok "$kafka/.stamp" "$kafka_want"; then
  need java "apt-get install -y openjdk-17-jre-headless"
  need mvn "apt-get install -y maven"
  echo "bench-tools: Kafka $kafka_version jars from Maven Central into $kafka/libs" >&2
  start=$SECONDS
  rm -rf "$kafka"
  mkdir -p "$kafka"
  mvn --batch-mode --quiet -Dstyle.color=never -f "$root/bench/kafka/pom.xml" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$kafka/libs"
  # Written last: an install that failed halfway has no stamp and is made again next time.
  echo "$kafka_want" >"$kafka/.stamp"
  echo "bench-tools: Kafka ready in $((SECONDS - start)) s ($(ls "$kafka/libs" | wc -l) jars)" >&2
fi

if ! stamp_ok "$peers/bin/.stamp" "$nats_want" || [ ! -x "$peers/bin/nats-server" ] || [ ! -x "$peers/bin/nats" ]; then
  need go "the Go toolchain from https://go.dev/dl/ (it builds the Kubernetes tools too)"
  echo "bench-tools: nats-server $nats_server_version and nats $natscli_version from their Go modules" >&2
  start=$SECONDS
  mkdir -p "$peers/bin"
  GOBIN=$peers/bin GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install "github.com/nats-io/nats-server/v2@$nats_server_version"
  GOBIN=$peers/bin GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install "github.com/nats-io/natscli/nats@$natscli_version"
  echo "$nats_want" >"$peers/bin/.stamp"
  echo "bench-tools: NATS ready in $((SECONDS - start)) s" >&2
fi

if ! stamp_ok "$venv/.stamp" "$venv_want" || ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
  need python3 "apt-get install -y python3 python3-venv"
  echo "bench-tools: $venv from bench/requirements.txt" >&2
  start=$SECONDS
  rm -rf "$venv"
  python3 -m venv "$venv"
  # Wheels only: nothing compiles here.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r "$root/bench/requirements.txt"
  echo "$venv_want" >"$venv/.stamp"
  echo "bench-tools: python ready in $((SECONDS - start)) s" >&2
fi
