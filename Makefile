# wxreach: `make demo` runs the product locally, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Lambda runtime is python3.12: take the first 3.12 interpreter that really runs
# (a pyenv shim on PATH may exist without its version being active).
PYTHON312 ?= $(shell for c in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	  $$c -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { command -v $$c || echo $$c; } && break; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON312)" ]; then echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12" >&2; exit 1; fi
	@echo "Creating $(VENV) with $(PYTHON312)"
	@$(PYTHON312) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create/refresh the virtualenv with everything needed to develop

.PHONY: lint
lint: $(STAMP) ## ruff, layer requirements in sync, sam validate --lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/wxreach/wxreach functions scripts local cli
	$(PY) scripts/export_layer_requirements.py --check
	$(PY) scripts/export_openapi.py --check
	$(VENV)/bin/sam validate --lint --region $(AWS_DEFAULT_REGION)

.PHONY: browser
browser: ## Headless Chromium for the browser e2e tests (best effort: they skip without it)
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1; } \
	  || echo "chromium not installed: the browser e2e tests will skip"

.PHONY: test
test: lint browser ## Lint, validate the template and run unit, integration and e2e tests
	$(PY) -m pytest -n 2 -m "not e2e"
	$(PY) -m pytest -m e2e

.PHONY: requirements
requirements: ## Export the layer's requirements.txt from pyproject.toml
	$(PY) scripts/export_layer_requirements.py

.PHONY: demo
demo: $(STAMP) ## Run the whole product locally (local stack + WeChat sandbox) and print a report
	$(PY) -m local.demo

.PHONY: local
local: $(STAMP) ## Start the local stack (API on :3000, moto on :5000) until Ctrl-C
	$(PY) -m local.stack

.PHONY: sandbox
sandbox: $(STAMP) ## Start the WeChat sandbox (:8900) until Ctrl-C
	$(PY) -m local.sandbox

.PHONY: build
build: $(STAMP) ## sam build (layer and functions, arm64)
	$(VENV)/bin/sam build --region $(AWS_DEFAULT_REGION)

.PHONY: openapi
openapi: $(STAMP) ## Regenerate docs/openapi.json from the operator API's code
	$(PY) scripts/export_openapi.py

.PHONY: bench
bench: $(STAMP) ## Benchmarks (cold import, webhook per-event work vs wechatpy, sender throughput, splitter)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m bench.run
# Broadcast splitter, 1 000 000 recipients on moto (BENCH_SPLITTER_ARGS="--recipients 20000" for a quick one)
	$(PY) -m bench.splitter $(BENCH_SPLITTER_ARGS)

.PHONY: clean
clean: ## Remove the virtualenv, build output and local data
	rm -rf $(VENV) .aws-sam .local-data .pytest_cache .ruff_cache
