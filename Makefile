# chimera-ops developer entry points. `make run` and `make test` bootstrap the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= examples/stack.yaml

.PHONY: run test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the agent in the foreground over the demo stack (PostgreSQL + Redis + the paper engine)
run: $(STAMP)
	$(BIN)/chimera-ops --config $(CONFIG) config check
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/chimera-ops --config $(CONFIG) agent

## test: the whole suite against real services (PostgreSQL on :5432 and Redis on :6379 must answer)
test: $(STAMP)
	$(BIN)/pytest -q

## test-fast: pure logic only
test-fast: $(STAMP)
	$(BIN)/pytest -q tests/unit

## lint: ruff (lint + format check) and mypy
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: benchmarks, side by side with supervisord and Monit; tables in bench/results/
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
