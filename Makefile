# Runnel: `make run` starts a standalone broker with a demo topic; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build release run test fmt bench tools e2e-tools crds clean

all: build

## Checks that the toolchain the build needs is present, and says how to get it when not.
tools:
	@scripts/check-tools.sh

## The pinned Kubernetes and etcd binaries the operator's tests run against, built from their Go
## modules and cached in ~/.cache/runnel (about 12 minutes cold, instant when cached).
e2e-tools:
	@scripts/check-tools.sh --test
	e2e/tools/build-tools.sh k8s etcd

build: tools
	$(CARGO) build --workspace --bins

release: tools
	$(CARGO) build --release -p runnel-broker -p runnel-client --bins

## Builds the release binaries and runs a standalone broker (data in ./data) with a demo topic.
run: release
	@scripts/run.sh

## Every test: formatting, lints, unit/property tests, integration tests with real processes.
test: tools e2e-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast --exclude runnel-integration
	@# Real broker processes; --nocapture shows what the kill -9 test counted.
	$(CARGO) test -p runnel-integration --no-fail-fast -- --nocapture

fmt:
	$(CARGO) fmt --all

## Regenerates crds/ from the Rust types (a test fails when they drift).
crds:
	$(CARGO) run -p runnel-operator --bin crdgen

## Broker vs raw-sled benchmark; writes docs/benchmarks.md.
bench: release
	@python3 scripts/bench.py

clean:
	$(CARGO) clean
