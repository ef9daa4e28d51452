# Kumo's build, demo and test entry points. Everything runs on a fresh Debian machine with Go.
SHELL := /bin/bash
BIN := bin
GO_LDFLAGS := -X kumo.dev/kumo/internal/version.Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo v0.1.0-dev)

.PHONY: all build ui demo stop test test-short generate verify bench-api images images-all clean

all: build

build: ui
	@mkdir -p $(BIN)
	go build -ldflags "$(GO_LDFLAGS)" -o $(BIN)/kumod ./cmd/kumod
	go build -ldflags "$(GO_LDFLAGS)" -o $(BIN)/kumo ./cmd/kumo
	go build -ldflags "$(GO_LDFLAGS)" -o $(BIN)/kumo-lab ./cmd/kumo-lab

# The browser console's bundle (web/ → internal/webui/dist, embedded into kumod), from npm
# packages pinned by web/package-lock.json. Without it kumod's /ui/ says to run this.
ui:
	hack/build-ui.sh

# Sets up and runs the main job: an all-in-one Kumo with the example tenant and manifests.
demo:
	hack/install-deps.sh
	$(MAKE) build
	images/build.sh kumo-tiny
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

# Bootable guest test images (cached in _output/images, FORCE=1 rebuilds); see images/README.md.
images:
	images/build.sh kumo-tiny

# Also the (slow) Debian 12 cloud-init image.
images-all:
	images/build.sh all

clean:
	rm -rf $(BIN) _output web/node_modules
	find internal/webui/dist -mindepth 1 ! -name README -delete

# Start latency: API create → QEMU running → guest booted, against launching the same QEMU directly.
.PHONY: bench-start
bench-start:
	go run ./bench/start

.PHONY: bench-import
bench-import:
	go run ./bench/import

# A real single-host Ceph cluster (1 mon, 1 mgr, 3 OSDs in datacenters dc1-dc3, pool "kumo",
# cephx user client.kumo) for labs; state in CEPH_DIR. See hack/ceph/up.sh. `make clean` does not
# stop it: run `make ceph-down` first.
CEPH_DIR ?= $(CURDIR)/_output/ceph
.PHONY: ceph-up ceph-down
ceph-up:
	hack/ceph/up.sh $(CEPH_DIR)

ceph-down:
	hack/ceph/down.sh $(CEPH_DIR)

# The lab: three datacenters on this machine (network namespaces, a server and etcd member per
# datacenter, two agents per datacenter, Ceph with a mon and an OSD per datacenter). State, data
# and logs in _output/lab; LAB_FLAGS passes flags to kumo-lab up (e.g. --nodes-per-dc 1).
.PHONY: lab lab-down
lab: build
	hack/install-deps.sh
	images/build.sh kumo-tiny
	$(BIN)/kumo-lab up $(LAB_FLAGS)

lab-down:
	$(BIN)/kumo-lab down
