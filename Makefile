# Each target sets up what it needs: a virtual environment with the pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/daq demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check daq drivers simulators tests bench
	$(BIN)/ruff format --check daq drivers simulators tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q $(PYTEST_ARGS)

check: test

bench: $(STAMP)
	$(BIN)/python bench/journal.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
