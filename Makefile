# Every target is self-contained on a fresh machine: it creates .venv and installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := node_modules/.installed

.PHONY: dev test check lint format crds cluster cluster-build bench clean native native-clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Corral needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(NODE_INSTALLED): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is required (Node.js 20+): install nodejs and npm"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The request-path modules compiled with mypyc (pyproject [tool.corral.native]; tools/native.py),
# rebuilt whenever a source under corral/ or the list changes; `corral` refuses stale builds.
NATIVE := corral/native.json
$(NATIVE): $(INSTALLED) $(shell find corral -name '*.py') tools/native.py
	$(PY) tools/native.py build

native: $(NATIVE)

native-clean:
	$(PY) tools/native.py clean

setup: $(INSTALLED) $(NODE_INSTALLED) $(NATIVE)

# `make dev DEV_FLAGS="--port 9090"`; any other manifest directory with DEV_DIR=path.
DEV_DIR ?= examples/dev
DEV_FLAGS ?=
dev: setup
	$(VENV)/bin/corral dev $(DEV_FLAGS) $(DEV_DIR)

test: setup
	$(PY) -m pytest

check: $(INSTALLED)
	$(VENV)/bin/ruff format --check corral tests e2e bench tools hatch_build.py
	$(VENV)/bin/ruff check corral tests e2e bench tools hatch_build.py
	$(VENV)/bin/mypy --strict corral tools hatch_build.py
	$(VENV)/bin/lint-imports

format: $(INSTALLED)
	$(VENV)/bin/ruff format corral tests e2e bench tools hatch_build.py
	$(VENV)/bin/ruff check --fix corral tests e2e bench tools hatch_build.py

# Regenerate crds/ from the resource models (a test fails when they are stale).
crds: $(INSTALLED)
	$(VENV)/bin/corral crds generate

# The local Kubernetes control plane (e2e/cluster): built from pinned Go modules, cached per version.
cluster-build:
	e2e/cluster/build

cluster: $(INSTALLED) cluster-build
	$(PY) -m e2e.cluster.launcher

# Images, kind cluster, Helm install and the end-to-end checks (needs Docker; not run in CI).
.PHONY: e2e-kind
e2e-kind: $(INSTALLED)
	e2e/kind/run.sh

# Benchmarks (not run by `make test`): all scenarios, or one with `make bench SCENARIO=overhead`.
bench: setup
	$(PY) -m bench run $(SCENARIO)

clean:
	rm -f corral/native.json && find corral -name '*.so' -delete && rm -rf build/native
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
