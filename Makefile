# Slurm virtual kubelet. `make` lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

GO        ?= go
LAB_SUITE ?= trixie
GOFILES    = $(shell find . -path ./.cache -prune -o -name '*.go' -print)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## Bring up the Slurm lab, a control plane, slurm-fetchd and slurm-vk; run and stream a first pod; leave it all running
	hack/demo/demo.sh up

.PHONY: demo-down
demo-down: ## Stop everything make demo started
	hack/demo/demo.sh down

.PHONY: build
build: ## Compile every package; binaries go to bin/
	$(GO) build -o bin/ ./...


.PHONY: agent
agent: ## Build the exec agent for compute nodes, static: bin/slurm-vk-agent (copy it where jobs find it: exec.agent)
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/slurm-vk-agent ./cmd/slurm-vk-agent

.PHONY: image
IMAGE_DIR := .cache/image
image: ## Build the provider image in Go, no Docker (static binary, user 65532, one commit = one digest) as an OCI layout in .cache/image/oci; IMAGE_PUSH=host:port/repo:tag [IMAGE_CA=ca.crt] pushes it
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags='-s -w -buildid=' -o $(IMAGE_DIR)/slurm-vk ./cmd/slurm-vk
	go run ./hack/image -binary $(IMAGE_DIR)/slurm-vk -created $$(git log -1 --format=%ct) -revision $$(git rev-parse HEAD) \
		-oci-layout $(IMAGE_DIR)/oci $(if $(IMAGE_PUSH),-push $(IMAGE_PUSH)) $(if $(IMAGE_CA),-ca-file $(IMAGE_CA))

.PHONY: chart-push
CHART_DIR := .cache/chart
chart-push: ## Package the chart and push it as an OCI artifact to CHART_REGISTRY=host:port/path [CHART_CA=ca.crt]; install it with helm install oci://host:port/path/slurm-vk
	@test -n "$(CHART_REGISTRY)" || { echo "chart-push: set CHART_REGISTRY=host:port/path" >&2; exit 2; }
	helm=$${HELM:-$$(hack/tools/helm.sh)} && rm -rf $(CHART_DIR) && mkdir -p $(CHART_DIR) && \
		$$helm package charts/slurm-vk -d $(CHART_DIR) && \
		$$helm push $(CHART_DIR)/slurm-vk-*.tgz oci://$(CHART_REGISTRY) $(if $(CHART_CA),--ca-file $(CHART_CA))

.PHONY: test
test: ## Everything, on a fresh machine: lint, verify, unit and lab tests (trixie, sid), end to end on a real control plane, the quick upstream conformance specs
	hack/test.sh

.PHONY: conformance
conformance: ## Kubernetes' own e2e specs (test/conformance/specs.yaml, all of them) against the virtual node on the lab; prints the table (first time: ~10 min to build the suite)
	hack/conformance/run.sh

.PHONY: chart
chart: ## Lint the Helm chart, check its goldens, schema and configs (builds the pinned helm once, ~3 min)
	HELM=$$(hack/tools/helm.sh) HELM_REQUIRED=1 $(GO) test -count=1 ./test/chart/

.PHONY: test-unit
test-unit: ## Fast inner loop: unit tests only, no lab (lab tests skip)
	env -u SLURM_LAB_ENV $(GO) test ./...

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: generate
generate: ## Regenerate the slurmrestd clients (*.gen.go) from openapi/ with the pinned oapi-codegen, and the chart README's values table
	$(GO) generate ./...
	$(GO) run ./hack/chart-docs -chart charts/slurm-vk

.PHONY: openapi
openapi: ## Re-capture the slurmrestd OpenAPI specs and test goldens from running labs (make lab-up for trixie and sid first)
	@for s in trixie sid; do [ -f .cache/lab/$$s/lab.env ] || { echo "lab $$s is not up: make lab-up LAB_SUITE=$$s"; exit 1; }; done
	. .cache/lab/trixie/lab.env && $(GO) run ./hack/openapi-capture -url $$SLURM_LAB_URL -user $$SLURM_LAB_USER \
		-token-file $$SLURM_LAB_TOKEN_FILE -version v0.0.42 -out openapi/v0.0.42/openapi.json
	. .cache/lab/sid/lab.env && $(GO) run ./hack/openapi-capture -url $$SLURM_LAB_URL -user $$SLURM_LAB_USER \
		-token-file $$SLURM_LAB_TOKEN_FILE -version v0.0.45 -out openapi/v0.0.45/openapi.json
	hack/capture-testdata.sh .cache/lab/trixie/lab.env v0.0.42
	hack/capture-testdata.sh .cache/lab/sid/lab.env v0.0.45

.PHONY: verify
verify: generate ## Regenerate, then fail if generated code, the chart README or go.mod/go.sum are stale
	$(GO) mod tidy -diff
	@if ! git diff --quiet -- '*.gen.go' charts/slurm-vk/README.md || [ -n "$$(git ls-files --others --exclude-standard -- '*.gen.go' charts/slurm-vk/README.md)" ]; then \
		echo "generated files are stale or untracked: run 'make generate' and commit"; \
		git status --short -- '*.gen.go' charts/slurm-vk/README.md; exit 1; fi

.PHONY: lab-up
lab-up: ## Start the Slurm lab (LAB_SUITE=trixie for 24.11, sid for 26.05); writes .cache/lab/$(LAB_SUITE)/lab.env
	LAB_SUITE=$(LAB_SUITE) hack/lab/lab-up.sh

.PHONY: controlplane-up
controlplane-up: ## Build (first time: ~13 min) and start kube-apiserver, scheduler, controller-manager and etcd on loopback
	hack/controlplane/up.sh

.PHONY: controlplane-down
controlplane-down: ## Stop the control plane started by controlplane-up
	hack/controlplane/down.sh

.PHONY: lab-down
lab-down: ## Stop the Slurm lab's daemons and unmount it (the chroot stays cached)
	LAB_SUITE=$(LAB_SUITE) hack/lab/lab-down.sh
