# ImmutableRelease operator. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN_DIR ?= $(CURDIR)/bin
export PATH := $(BIN_DIR):$(PATH)

# Tools, pinned.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(BIN_DIR)/controller-gen
# ko builds the manager image; its version is pinned in hack/tools/ko/go.mod.
KO ?= $(BIN_DIR)/ko

# The local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok) is built from the Go module proxy into bin/ by hack/build-test-binaries.sh.
CONTROL_PLANE := $(BIN_DIR)/kube-apiserver $(BIN_DIR)/etcd $(BIN_DIR)/kwok
export KUBEBUILDER_ASSETS := $(BIN_DIR)

GO_TEST_FLAGS ?= -timeout 30m

.PHONY: all
all: build

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests under config/ from the markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: test
test: manifests generate vet control-plane gitea ## Run all tests against a real kube-apiserver, etcd and Git server (builds them first).
	go test $(GO_TEST_FLAGS) ./...

.PHONY: e2e
e2e: control-plane gitea ## Run the end-to-end stories: the operator binary, installed with kubectl, on the full local control plane.
	go vet -tags e2e ./e2e
	go test -tags e2e -count=1 -timeout 20m -v ./e2e 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test.go)'

.PHONY: control-plane
control-plane: ## Build the local control plane binaries into bin/ (Kubernetes about 8 minutes the first time; it prints what it measures).
	@hack/build-test-binaries.sh

.PHONY: gitea
gitea: control-plane ## Build Gitea into bin/ for the pull-request tests (about 2.5-3 minutes the first time, after the control plane).
	@WITH_GITEA=1 hack/build-test-binaries.sh

.PHONY: bench
bench: control-plane ## The scale benchmark (docs/benchmarks.md): N releases against the floor, the largest N over 1 and 3 shards, steady state, webhook, drift, rollback, restart. N=100,500,1000 takes about 20 minutes.
	go run ./hack/bench -n $${N:-100,500,1000} $${BENCH_FLAGS:-}

.PHONY: bench-micro
bench-micro: control-plane ## Single-release benchmarks: webhook to applied, drift correction, revert built and pushed (BENCHTIME=20x); image verification of 1000 releases sharing 10 images.
	go test ./controllers -run '^$$' -bench . -benchtime $${BENCHTIME:-20x} -timeout 30m
	go test ./internal/git -run '^$$' -bench BenchmarkRevert -benchtime $${BENCHTIME:-20x} -timeout 10m
	go test ./internal/verify -run '^$$' -bench BenchmarkFleetVerification -benchtime 1x

.PHONY: bench-drift
bench-drift: control-plane ## Time drift corrections: N image edits on a live Deployment, in the local cluster and in a remote one (spec.kubeConfig); prints p50, p99, max, and the manager's memory per remote cluster.
	go test ./controllers -run '^$$' -bench BenchmarkDriftCorrection -benchtime $${N:-100}x -timeout 20m
	go test ./controllers -run '^$$' -bench BenchmarkRemoteClusterMemory -benchtime 1x -timeout 20m

##@ Build and run

.PHONY: build
build: generate ## Build the manager and the kubectl-release plugin into bin/.
	go build -o $(BIN_DIR)/manager ./cmd/manager
	go build -o $(BIN_DIR)/kubectl-release ./cmd/kubectl-release

.PHONY: dist
dist: manifests $(KO) ## Build the manager image with ko and write dist/install.yaml naming it by digest (KO_DOCKER_REPO=..., PUSH=true to publish).
	@hack/dist.sh

.PHONY: run
run: manifests generate ## Run the manager against the cluster in $KUBECONFIG.
	go run ./cmd/manager

##@ Demo

.PHONY: demo
demo: control-plane build ## Start a local control plane, a Git server and the operator, and deploy the sample release.
	@hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop everything `make demo` started.
	@hack/demo.sh down

$(KO): hack/tools/ko/go.mod
	cd hack/tools/ko && GOBIN=$(BIN_DIR) go install github.com/google/ko

$(CONTROLLER_GEN):
	GOBIN=$(BIN_DIR) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
