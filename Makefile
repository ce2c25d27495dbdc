# Runnel: `make run` starts a standalone broker with a demo topic; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build release run test check fmt clippy unit bench tools clean

all: build

## Checks that the toolchain the build needs is present, and says how to get it when not.
tools:
	@scripts/check-tools.sh

build: tools
	$(CARGO) build --workspace --bins

release: tools
	$(CARGO) build --release -p runnel-broker -p runnel-client --bins

## Builds the release binaries and runs a standalone broker (data in ./data) with a demo topic.
run: release
	@scripts/run.sh

## Every test: formatting, lints, unit/property tests, integration tests with real processes.
test: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all

## Broker vs raw-sled benchmark; writes docs/benchmarks.md.
bench: release
	@python3 scripts/bench.py

clean:
	$(CARGO) clean
