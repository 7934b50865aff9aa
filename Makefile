# Slurm virtual kubelet. `make` lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

GO        ?= go
LAB_SUITE ?= trixie
GOFILES    = $(shell find . -path ./.cache -prune -o -name '*.go' -print)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Compile every package; binaries go to bin/
	$(GO) build -o bin/ ./...

.PHONY: test
test: ## Everything, on a fresh machine: lint, verify, unit tests, and integration tests on the Slurm lab (trixie and sid)
	hack/test.sh

.PHONY: test-unit
test-unit: ## Fast inner loop: unit tests only, no lab (lab tests skip)
	env -u SLURM_LAB_ENV $(GO) test ./...

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: generate
generate: ## Regenerate generated code (go generate)
	$(GO) generate ./...

.PHONY: verify
verify: generate ## Regenerate, then fail if generated code or go.mod/go.sum are stale
	$(GO) mod tidy -diff
	@if [ -n "$$(git status --porcelain -- '*.gen.go')" ]; then \
		echo "generated code is stale or untracked: run 'make generate' and commit"; \
		git status --short -- '*.gen.go'; exit 1; fi

.PHONY: lab-up
lab-up: ## Start the Slurm lab (LAB_SUITE=trixie for 24.11, sid for 26.05); writes .cache/lab/$(LAB_SUITE)/lab.env
	LAB_SUITE=$(LAB_SUITE) hack/lab/lab-up.sh

.PHONY: lab-down
lab-down: ## Stop the Slurm lab's daemons and unmount it (the chroot stays cached)
	LAB_SUITE=$(LAB_SUITE) hack/lab/lab-down.sh
