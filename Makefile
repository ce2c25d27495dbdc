# Runnel: `make run` starts a standalone broker with a demo topic; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build release run test fmt fuzz bench bench-tools bench-peers tools e2e-tools python-tools crds clean cluster cluster-down images up down e2e-kind

all: build

## Checks that the toolchain the build needs is present, and says how to get it when not.
tools:
	@scripts/check-tools.sh

## What the end-to-end tests run: the pinned Kubernetes, etcd, containerd, crictl, CoreDNS and
## helm binaries, built from their Go modules and cached in ~/.cache/runnel (about 22 minutes
## cold, instant when cached), and the Debian packages of the local cluster's node (runc, CNI
## plugins, iptables, nftables, openssl, umoci), installed when missing.
e2e-tools:
	@scripts/check-tools.sh --test
	e2e/cluster/runnel-cluster prepare

## The Python test client's venv (stock grpcio, pinned in tests/python/requirements.txt) in
## ${RUNNEL_HOME:-~/.cache/runnel}/python: about 8 s cold, silent when up to date.
python-tools:
	@scripts/python-tools.sh

## Runnel's container images without Docker: OCI archives of runnel-broker and runnel-operator
## made with umoci from the release binaries (target/images/*.tar), imported into the local
## cluster's containerd when it is up. Where Docker exists, the Dockerfile builds the same images.
images: tools
	CARGO="$(CARGO)" e2e/images/build-images.sh

## A real single-node Kubernetes cluster on this host (no Docker): etcd, API server, controllers,
## containerd + kubelet, kube-proxy, CoreDNS, a default StorageClass. About 20 minutes the first
## time (it builds the pinned binaries), ~15 s after that. Prints `export KUBECONFIG=...`.
cluster:
	e2e/cluster/runnel-cluster up

## Stops the local cluster and leaves the host as `make cluster` found it.
cluster-down:
	e2e/cluster/runnel-cluster down

## Runnel on Kubernetes on this host: the local cluster up, the images built and imported, the
## chart installed (namespace runnel-system), examples/ applied (namespace events), waits for
## the brokers and Topics to be Ready and prints what to try next. Again: reuses what is there.
up: tools
	CARGO="$(CARGO)" scripts/up.sh

## Takes down what `make up` started: the examples, the release, their namespaces, the cluster.
down:
	scripts/down.sh

## The Helm journey (e2e/tests/helm_journey.rs) on a kind cluster, with images built by Docker
## from the Dockerfile: needs docker and kind (the CI workflow .github/workflows/e2e-kind.yml).
e2e-kind:
	CARGO="$(CARGO)" e2e/kind/run.sh

build: tools
	$(CARGO) build --workspace --bins

release: tools
	$(CARGO) build --release -p runnel-broker -p runnel-client --bins
	$(CARGO) build --release -p runnel-integration --bin runnel-loopback-cluster

## Builds the release binaries and runs a standalone broker (data in ./data) with a demo topic.
run: release
	@scripts/run.sh

## Every test: formatting, lints, unit/property tests, integration tests with real processes.
test: tools e2e-tools python-tools bench-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast --exclude runnel-integration
	@# Real broker processes; --nocapture shows what the kill -9 test counted.
	$(CARGO) test -p runnel-integration --no-fail-fast -- --nocapture
	@# Every fuzz target for 60 s on the nightly toolchain (installed when missing).
	scripts/fuzz.sh 60

## Every fuzz target for FUZZ_SECONDS (default 600) each; what they find goes into fuzz/corpus/.
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS) --keep

fmt:
	$(CARGO) fmt --all

## Regenerates crds/ from the Rust types, and the Helm chart's copies in charts/runnel/crds/
## (tests fail when either drifts).
crds:
	$(CARGO) run -p runnel-operator --bin crdgen
	cp crds/*.yaml charts/runnel/crds/

## Broker vs raw-sled benchmark; writes docs/benchmarks.md (keeping the bench-peers section).
bench: release
	@python3 scripts/bench.py

## The peers of bench-peers, cached in ~/.cache/runnel/peers: Apache Kafka 4.4.0's jars from
## Maven Central (bench/kafka/pom.xml), nats-server and the nats CLI built from their Go modules,
## and a venv with matplotlib for the charts. A few minutes cold, silent when up to date.
bench-tools:
	@bench/tools.sh

## Runnel next to Apache Kafka and NATS JetStream on this machine (bench/peers.py, about 30 min):
## writes its section of docs/benchmarks.md and the charts in docs/img/. Run it on a quiet machine.
bench-peers: release bench-tools
	@$${RUNNEL_HOME:-$$HOME/.cache/runnel}/peers/python/bin/python bench/peers.py

clean:
	$(CARGO) clean
