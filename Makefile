# numaflow-connectors: one Makefile for every module. Per-module targets are pattern rules:
#   make test/common   make lint/sqs-source   make tidy/root   make bench/redis-streams-source
# "root" names the root module (the runner, end-to-end and fault tests).

SHELL      := /bin/bash
GO         ?= go
CONNECTORS := redis-streams-source sqs-source pubsub-source
CONNECTORS += mqtt-source
CONNECTORS += rabbitmq-source
# deploy/observability: the dashboard and alert tests (Prometheus's Go packages kept out of the root module).
MODULES    := common $(CONNECTORS) deploy/observability root
BIN        := bin
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS    := -s -w -X github.com/numaflow-connectors/sources/common/version.Version=$(VERSION) \
              -X github.com/numaflow-connectors/sources/common/version.Commit=$(COMMIT)
# Every module is tested on its own (GOWORK=off), exactly as a fork of one connector plus common builds.
TEST_FLAGS ?= -race -shuffle=on -count=1 -timeout 25m -parallel 8
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

moddir = $(if $(filter root,$(1)),.,$(1))

.PHONY: all build run test deps vet lint tidy bench docs clean $(addprefix test/,$(MODULES)) $(addprefix vet/,$(MODULES)) \
        $(addprefix lint/,$(MODULES)) $(addprefix tidy/,$(MODULES)) $(addprefix bench/,$(MODULES))

all: build

## build: every connector binary to bin/<connector>, plus the local runner and the memsource demo
build:
	@mkdir -p $(BIN)
	@for c in $(CONNECTORS); do \
		if ls $$c/*.go >/dev/null 2>&1; then \
			(cd $$c && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o ../$(BIN)/$$c .) || exit 1; \
		fi; \
	done
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/udsource-run ./cmd/udsource-run
	cd common && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o ../$(BIN)/memsource ./cmd/memsource

## run: the Redis Streams connector end to end on an embedded broker (miniredis inside the runner,
## seeded with 100,000 entries), with a live progress line. With REDIS_URL set it uses that Redis.
RUN_ARGS ?= --limit 100000 --idle 3
run: build
	$(BIN)/udsource-run --embedded redis $(RUN_ARGS) -- $(BIN)/redis-streams-source

## deps: install brokers and emulators the tests need (apt, npm ci) and Go modules
deps:
	@bash scripts/deps.sh

## test: everything CI checks: deps, module hygiene, vet, gofmt, staticcheck, docs drift, unit + integration + conformance tests
test: deps tidy lint $(addprefix test/,$(MODULES))
	@echo "make test: all modules passed"

$(addprefix test/,$(MODULES)): test/%:
	@echo "== test $*"
	cd $(call moddir,$*) && GOWORK=off $(GO) test $(TEST_FLAGS) ./...

## vet: go vet and gofmt for every module, plus module-boundary checks (part of make test)
vet: $(addprefix vet/,$(MODULES))
	@bash scripts/check-modules.sh

## lint: vet plus staticcheck (installed from the Go module proxy, pinned; part of make test)
lint: vet $(addprefix lint/,$(MODULES))

$(addprefix lint/,$(MODULES)): lint/%:
	cd $(call moddir,$*) && GOWORK=off $(GO) run $(STATICCHECK) ./...

$(addprefix vet/,$(MODULES)): vet/%:
	cd $(call moddir,$*) && GOWORK=off $(GO) vet ./...
	@cd $(call moddir,$*) && { test -z "$$(gofmt -l .)" || { echo "gofmt needed in $*:"; gofmt -l .; exit 1; }; }

## tidy: fail when go mod tidy would change any go.mod or go.sum
tidy: $(addprefix tidy/,$(MODULES))

$(addprefix tidy/,$(MODULES)): tidy/%:
	@cd $(call moddir,$*) && { GOWORK=off $(GO) mod tidy -diff >/dev/null 2>&1 || \
		{ echo "go mod tidy would change $*:"; GOWORK=off $(GO) mod tidy -diff; exit 1; }; }

## bench: every module's benchmarks, then docs/benchmarks.md (machine, versions, figures beside their targets)
bench: deps
	@GO=$(GO) bash scripts/bench.sh

$(addprefix bench/,$(MODULES)): bench/%:
	cd $(call moddir,$*) && GOWORK=off $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./...

## soak: the fault and scale tests of e2e/faults, bigger and longer (SOAK=1: 5x messages and kills, longer holds;
##   SOAK_FACTOR=N to change); stops by itself within its timeout
.PHONY: soak
soak:
	GOWORK=off SOAK=1 $(GO) test -race -count=1 -timeout 120m -parallel 8 -v -run . ./e2e/faults/

## docs: regenerate the env tables in every README from the config structs
docs:
	@for m in $(CONNECTORS) root; do (cd $$(if [ $$m = root ] ; then echo . ; else echo $$m; fi) && UPDATE_DOCS=1 GOWORK=off $(GO) test -count=1 -run 'TestREADME' ./... >/dev/null) || exit 1; done

clean:
	rm -rf $(BIN) dist

# Container images (no Docker engine): common/cmd/build-image packs the static binaries; see RELEASING.md.
DIST ?= dist

.PHONY: images push

## images: for every connector with a main.go, static linux/amd64 + linux/arm64 binaries packed into one OCI
##   image index, each image with an SPDX SBOM made from its binary's Go build info (a BuildKit attestation
##   manifest in the index): $(DIST)/oci/<connector>/ (OCI layout) and $(DIST)/<connector>-linux-<arch>.tar
##   (docker load), then every image and SBOM is opened and checked, the SBOM against the connector's go.mod
##   (common/imagebuild TestDist). Tag: VERSION when given on the command line, else the connector's newest
##   <connector>/vX.Y.Z git tag (build-image version <connector>).
##   One connector: make images CONNECTORS=sqs-source VERSION=v0.1.0
images:
	@set -e; \
	epoch=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct)}; rev=$$(git rev-parse HEAD); \
	bi=$(abspath $(DIST))/bin/build-image; vp=github.com/numaflow-connectors/sources/common/version; \
	mkdir -p $(DIST)/bin; \
	(cd common && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -o $$bi ./cmd/build-image); \
	for c in $(CONNECTORS); do \
		if [ ! -f $$c/main.go ]; then echo "images: skipping $$c (no main.go)"; continue; fi; \
		if [ "$(origin VERSION)" = "command line" ]; then v='$(VERSION)'; else v=$$($$bi version $$c); fi; \
		echo "== image $$c:$$v"; \
		for a in amd64 arm64; do \
			(cd $$c && GOWORK=off CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath \
				-ldflags "-s -w -X $$vp.Version=$$v -X $$vp.Commit=$(COMMIT)" -o $(abspath $(DIST))/bin/$$c/$$a/$$c .); \
		done; \
		$$bi build -name $$c -version "$$v" -revision "$$rev" -created "$$epoch" \
			-description "$$(cd $$c && GOWORK=off $(GO) list -f '{{.Doc}}' .)" \
			-bin linux/amd64=$(DIST)/bin/$$c/amd64/$$c -bin linux/arm64=$(DIST)/bin/$$c/arm64/$$c -out $(DIST); \
	done; \
	cd common && GOWORK=off $(GO) test -count=1 -run '^TestDist$$' ./imagebuild -args -dist=$(abspath $(DIST)) -src=$(CURDIR)

## push: push every image index built by `make images` as $(REGISTRY)/<connector>:<its version>
##   (credentials: docker's config.json and credential helpers; PUSH_FLAGS=-insecure for a plain-HTTP registry)
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host/path"; exit 2; }
	@set -e; \
	bi=$(abspath $(DIST))/bin/build-image; mkdir -p $(DIST)/bin; \
	(cd common && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -o $$bi ./cmd/build-image); \
	for c in $(CONNECTORS); do \
		if [ ! -f $$c/main.go ]; then continue; fi; \
		if [ ! -d $(DIST)/oci/$$c ]; then echo "push: no $(DIST)/oci/$$c: run make images first"; exit 1; fi; \
		$$bi push -layout $(DIST)/oci/$$c -registry $(REGISTRY) $(PUSH_FLAGS); \
	done
