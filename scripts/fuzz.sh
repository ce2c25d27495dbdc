#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 60) and fails on any crash.
# Installs what it needs when missing: the nightly toolchain and cargo-fuzz.
#   scripts/fuzz.sh [SECONDS] [--keep]
# Seeds come from fuzz/corpus/<target>. With --keep (make fuzz) the inputs the fuzzer finds are
# added there, to be minimised (cargo +nightly fuzz cmin) and committed; without it (make test)
# they go to target/fuzz-corpus, so a test run leaves the tree as it was.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
keep=${2:-}
CARGO_FUZZ_VERSION=0.13.2

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (libFuzzer needs it)" >&2
  rustup toolchain install nightly --profile minimal || {
    echo "missing: the nightly toolchain — install it with: rustup toolchain install nightly --profile minimal" >&2
    exit 1
  }
fi
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked || {
    echo "missing: cargo-fuzz — install it with: cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked" >&2
    exit 1
  }
fi

cd "$root/fuzz"
targets=$(cargo +nightly fuzz list)
total=0
for target in $targets; do
  seeds=$root/fuzz/corpus/$target
  mkdir -p "$seeds"
  if [ "$keep" = "--keep" ]; then
    corpora=("$seeds")
  else
    scratch=$root/target/fuzz-corpus/$target
    rm -rf "$scratch" && mkdir -p "$scratch"
    corpora=("$scratch" "$seeds")
  fi
  log=$root/target/fuzz-$target.log
  mkdir -p "$root/target"
  # A crash fails the run, and libFuzzer writes the input that caused it under fuzz/artifacts/.
  if ! cargo +nightly fuzz run "$target" "${corpora[@]}" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $target crashed; the input is under fuzz/artifacts/$target/ (log: $log)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  echo "fuzz: $target: ${runs:-?} executions in ${seconds} s, no crash"
  total=$((total + ${runs:-0}))
done
echo "fuzz: $total executions in all"
