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

lint: install
	$(BIN)/lint-imports

# All tiers: unit, dataplane, controlplane (kind skips itself without Docker).
test: tools lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

dataplane: tools
	$(BIN)/python -m pytest -m dataplane $(PYTEST_ARGS)

controlplane: tools
	$(BIN)/python -m pytest -m controlplane $(PYTEST_ARGS)
