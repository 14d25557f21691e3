# attestd — see README.md.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build demo test deps lint check-generated generate static fuzz bench clean man
.PHONY: image e2e

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/attestfleet
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/attestd ./cmd/attestctl

# attestctl's man pages (section 1, one per command) into man/; docs/cli/ has the same as markdown.
man: build
	bin/attestctl gen-docs --man man

# The daemon on the in-process TPM simulator, a full lifecycle, and its verification; then
# the control plane's flow through attestfleet on its embedded SQLite store (docs/fleet.md).
demo: build
	scripts/demo.sh

# Everything CI runs. The image e2e (images/e2e.sh, 3-5 min on 2 cores, more under load) needs root; CI
# (CI=true) runs it always, elsewhere SKIP_E2E=1 skips it.
test: deps lint check-generated static
	$(GO) test -race -count=1 -timeout 30m ./...
	@if [[ -z "$$CI" && -n "$$SKIP_E2E" ]]; then echo "make test: SKIP_E2E set: images/e2e.sh not run"; \
	elif [[ $$(id -u) -ne 0 ]]; then echo "make test: images/e2e.sh needs root (make e2e as root; SKIP_E2E=1 skips it)"; exit 1; \
	else images/e2e.sh; fi

deps:
	scripts/install-deps.sh

lint:
	@out=$$(gofmt -l .); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags attestd_demo_fakes ./cmd/attestd

# Production binaries build without cgo.
static:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/attestd
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/attestctl
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/attestfleet

generate:
	scripts/generate.sh

check-generated: generate
	@git diff --exit-code -- agent/api fleet/api || { echo "generated code is stale: run make generate and commit"; exit 1; }

# Short fuzzing of every target (the seed corpora also run in make test).
fuzz:
	scripts/fuzz.sh 20s

# The build-runner image (root; debootstrap cached in images/.cache) -> images/out.
image:
	images/bake.sh

# Bake, boot under QEMU + OVMF + swtpm, verify; then the negative variants (root, part of make test).
e2e:
	images/e2e.sh

# The issue-12 harness (internal/bench): the real attestd on swtpm, side by side with the raw TPM work,
# figures into docs/performance.md (between the bench markers) and plots into docs/perf/. Needs swtpm
# (make deps). 5-12 minutes on a loaded 2-core machine; BENCH_QUICK=1 runs a shorter series.
bench:
	$(GO) run ./internal/bench/cmd/attestd-bench -docs docs/performance.md -out docs/perf

# The testing.B benchmarks.
.PHONY: bench-go
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 200x ./attest/tpm/ ./agent/

# The fleet verifier under load (internal/fleetload): 3 replicas on a private PostgreSQL, agents on the fake
# SEV-SNP/TDX guests and swtpm; figures and the 10 M builds/day extrapolation into docs/fleet-scale.md
# (between its markers), plots into docs/perf/fleet-*.png. Needs postgresql and swtpm (make deps).
# FLEET_BENCH_QUICK=1 runs a short load.
.PHONY: fleet-bench
fleet-bench:
	$(GO) test -count=1 -timeout 60m -run '^TestFleetBench$$' ./internal/fleetload/ \
		-args -fleetload.docs $(CURDIR)/docs/fleet-scale.md -fleetload.out $(CURDIR)/docs/perf

clean:
	rm -rf bin .demo

# The independent cosign check of the Sigstore bundles attestd writes (distribute's TestCosignVerifies,
# build tag cosign). Not in make test: a cold go install of cosign takes up to an hour on 2 busy cores;
# make test runs the sigstore-go check (cosign verifies bundles with sigstore-go).
.PHONY: cosign-check
cosign-check:
	[[ -x bin/tools/cosign ]] || GOBIN=$(CURDIR)/bin/tools $(GO) install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
	$(GO) test -tags cosign -count=1 -run TestCosignVerifies ./distribute/
