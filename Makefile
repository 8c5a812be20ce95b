# kvtrace developer entry points. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install tools lint test unit dataplane controlplane

$(BIN)/kvtrace: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/kvtrace

# Build (or reuse) the real upstream programs of the local stack.
tools: install
	$(BIN)/kvtrace dev tools

# import-linter puts its working directory first on sys.path, where the kvnode/ source
# root would shadow the kvnode package: run it from a neutral directory.
lint: install
	cd / && $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/pyproject.toml

# All tiers: unit, dataplane, controlplane (kind skips itself without Docker).
test: tools lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

dataplane: tools
	$(BIN)/python -m pytest -m dataplane $(PYTEST_ARGS)

controlplane: tools
	$(BIN)/python -m pytest -m controlplane $(PYTEST_ARGS)

# ---- Shipping: chart, install manifests, images, kind (issue 5) ----------------------------
.PHONY: crds manifests images kind-up kind-down e2e

CHART := charts/kvtrace-operator
# helm v4 from the tool cache (`kvtrace dev tools`); override with HELM=/path/to/helm.
HELM ?= $(shell $(BIN)/python -c 'from kvtrace.devstack.tools import binary; print(binary("helm"))' 2>/dev/null)
# manifests/install.yaml is this header plus exactly this `helm template` output;
# tests/chart/chartlib.py reads both lines below and fails on drift.
MANIFESTS_HEADER = Generated from charts/kvtrace-operator by `make manifests` (helm template); do not edit.
MANIFESTS_HELM_ARGS = template kvtrace-operator charts/kvtrace-operator --namespace kvtrace-system --include-crds --kube-version 1.37.2 --set createNamespace=true
IMAGE_REGISTRY ?= ghcr.io/kvtrace
IMAGE_TAG ?= 0.1.0
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
KIND ?= kind
KIND_CLUSTER ?= kvtrace
KIND_NODE_IMAGE ?=

# The chart ships byte-identical copies of the top-level CRDs (the single source).
crds:
	rm -f $(CHART)/crds/*.yaml
	cp crds/*.yaml $(CHART)/crds/

manifests: install crds
	@test -n "$(HELM)" || { echo "helm v4 is not built: run 'kvtrace dev tools' (or pass HELM=...)"; exit 1; }
	mkdir -p manifests
	{ echo '# $(MANIFESTS_HEADER)'; $(HELM) $(MANIFESTS_HELM_ARGS); } > manifests/install.yaml.tmp
	mv manifests/install.yaml.tmp manifests/install.yaml

# The operator and KV node images (where a container engine exists).
images:
	@test -n "$(CONTAINER_ENGINE)" || { echo "no docker or podman found: cannot build images"; exit 1; }
	$(CONTAINER_ENGINE) build -f operator/Dockerfile -t $(IMAGE_REGISTRY)/kvtrace-operator:$(IMAGE_TAG) .
	@if [ -f kvnode/Dockerfile ]; then \
		echo "$(CONTAINER_ENGINE) build -f kvnode/Dockerfile -t $(IMAGE_REGISTRY)/kvnode:$(IMAGE_TAG) ."; \
		$(CONTAINER_ENGINE) build -f kvnode/Dockerfile -t $(IMAGE_REGISTRY)/kvnode:$(IMAGE_TAG) .; \
	else echo "kvnode/Dockerfile not found: skipping the KV node image"; fi

# A kind cluster with both images loaded and the operator installed by the chart.
kind-up: install images
	@command -v $(KIND) >/dev/null || { echo "kind not found: see https://kind.sigs.k8s.io"; exit 1; }
	@test -n "$(HELM)" || { echo "helm v4 is not built: run 'kvtrace dev tools' (or pass HELM=...)"; exit 1; }
	$(KIND) get clusters | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER) --config kind/cluster.yaml $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE))
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(IMAGE_REGISTRY)/kvtrace-operator:$(IMAGE_TAG)
	@if [ -f kvnode/Dockerfile ]; then $(KIND) load docker-image --name $(KIND_CLUSTER) $(IMAGE_REGISTRY)/kvnode:$(IMAGE_TAG); fi
	$(HELM) upgrade --install kvtrace-operator $(CHART) --kube-context kind-$(KIND_CLUSTER) \
		--namespace kvtrace-system --create-namespace --set image.tag=$(IMAGE_TAG) \
		--set image.pullPolicy=Never --wait --timeout 5m

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)

# The kind tier (skips with a reason where Docker or kind is missing).
e2e: install
	$(BIN)/python -m pytest -m kind tests/e2e $(PYTEST_ARGS)
