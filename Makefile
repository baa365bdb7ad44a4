# Two entry points for a fresh machine: `make reproduce` (main job) and `make test`.
# Each creates the virtual environment when missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 8
PROFILE ?= config/config.yaml

.PHONY: venv reproduce test test-fast lint test-slurm bench clean-results

$(BIN)/resrank: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/resrank

venv: $(BIN)/resrank

reproduce: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake all --cores $(CORES) --configfile $(PROFILE)

test: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ruff check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

test-slurm: venv
	PATH=$(CURDIR)/$(BIN):$$PATH bash tools/slurm_integration.sh || [ $$? -eq 77 ]

bench: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/bm25_throughput.py
