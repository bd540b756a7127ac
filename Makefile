# flowbus build, image and release targets, and the development checks
# (each runs the step of the same purpose in .ci/run; see README
# "Development"). Tests: go test ./... (README).
#
#   make build      ./flowbus for this machine
#   make image      the container image flowbus:$(VERSION) (podman or docker)
#   make release    static release binaries under dist/ with version info
#
# Deployment targets are kept to themselves (variables prefixed with
# nothing that a test target would use); see README "Deploy".

VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
CREATED   ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
IMAGE     ?= flowbus:$(VERSION)
CONTAINER ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
PLATFORMS ?= linux/amd64 linux/arm64
# Extra flags for "$(CONTAINER) build" (CI: --layers=false, no intermediate images).
IMAGE_BUILD_FLAGS ?=

GO_LDFLAGS := -s -w -X github.com/flowbus/flowbus/pipeline/cli.version=$(VERSION)
GO_BUILD   := CGO_ENABLED=0 go build -trimpath -ldflags '$(GO_LDFLAGS)'

.PHONY: build image release deploy-manifests

build:
	$(GO_BUILD) -o flowbus .

# The image's context is build/image/: a root file system tree with the
# static binary, the build host's CA bundle and an empty /tmp, and the empty
# state folder (the Containerfile copies them into a scratch image).
image:
	rm -rf build/image
	mkdir -p build/image/rootfs/usr/bin build/image/rootfs/etc/ssl/certs \
		build/image/rootfs/tmp build/image/state
	chmod 1777 build/image/rootfs/tmp
	$(GO_BUILD) -o build/image/rootfs/usr/bin/flowbus .
	cp /etc/ssl/certs/ca-certificates.crt build/image/rootfs/etc/ssl/certs/
	$(CONTAINER) build $(IMAGE_BUILD_FLAGS) -f Containerfile -t $(IMAGE) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg CREATED=$(CREATED) build/image

# One static binary per platform and a SHA256SUMS file.
release:
	rm -rf dist && mkdir -p dist
	set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		GOOS=$$os GOARCH=$$arch $(GO_BUILD) -o dist/flowbus-$(VERSION)-$$os-$$arch . ; \
	done
	cd dist && sha256sum flowbus-* > SHA256SUMS

# deploy/kubernetes/ from the Helm chart (Helm is built by .ci/tools/build).
deploy-manifests:
	.ci/deploy-manifests

# --- Development checks (.ci/run steps by name).

.PHONY: test race flake lint tidy fuzz-smoke poison cross generate generated ci

# README's test command.
test:
	go test ./...

# go test -race on the packages with concurrency.
race:
	.ci/run race

# The packages whose tests share package state, five times in one process.
flake:
	.ci/run flake

# gofmt, go vet, go mod tidy (no diff) and staticcheck.
lint:
	.ci/run fmt vet tidy staticcheck

tidy:
	.ci/run tidy

# Every Fuzz target for a number of inputs (FUZZ_TIME=20000x by default).
fuzz-smoke:
	.ci/run fuzz-smoke

# The whole suite with -tags flowbus_poison: released flows are overwritten.
poison:
	.ci/run poison

# GOOS=darwin and GOARCH=arm64 builds.
cross:
	.ci/run cross

# Regenerates the protobuf code, then the JSON and protobuf codecs made
# from it, and the BPF objects (needs protoc, clang and libbpf-dev: `.ci/run tools` installs them).
generate:
	go generate ./flow/
	go generate ./flow/flowjson/ ./codec/ ./bpf/

# Checks that the committed generated code is what generate makes.
generated:
	.ci/run proto bpf

# Everything CI runs.
ci:
	.ci/run
