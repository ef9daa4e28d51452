# Kumo's build, demo and test entry points. Everything runs on a fresh Debian machine with Go.
SHELL := /bin/bash
BIN := bin
GO_LDFLAGS := -X kumo.dev/kumo/internal/version.Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo v0.1.0-dev)

.PHONY: all build demo stop test test-short generate verify bench-api clean

all: build

build:
	@mkdir -p $(BIN)
	go build -ldflags "$(GO_LDFLAGS)" -o $(BIN)/kumod ./cmd/kumod
	go build -ldflags "$(GO_LDFLAGS)" -o $(BIN)/kumo ./cmd/kumo

# Sets up and runs the main job: an all-in-one Kumo with the example tenant and manifests.
demo: build
	hack/demo.sh

stop:
	hack/demo.sh stop

# The whole suite, as CI runs it: generated code check, vet, unit, fuzz seeds and system tests.
test:
	hack/test.sh

# Unit tests only (skips system tests that start servers).
test-short:
	go test -short ./...

generate:
	hack/update-codegen.sh

verify:
	hack/verify-codegen.sh

bench-api:
	go run ./bench/api

clean:
	rm -rf $(BIN) _output
