# Each target sets up what it needs: a virtual environment with the pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck bench clean peers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# import-linter in an environment of its own (why: the lint group in pyproject.toml). It reads
# the packages' source from this directory; nothing of the project is installed there.
LINT_VENV := $(VENV)/lint
LINT_STAMP := $(LINT_VENV)/.installed
$(LINT_STAMP): pyproject.toml
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --upgrade pip
	$(LINT_VENV)/bin/pip install --quiet --group lint
	touch $(LINT_STAMP)

# The node-opcua server the OPC UA driver is tested against, as pinned by its lock file
# (npm writes node_modules/.package-lock.json on each install).
PEER_OPCUA := tests/peers/opcua-node
$(PEER_OPCUA)/node_modules/.package-lock.json: $(PEER_OPCUA)/package-lock.json
	cd $(PEER_OPCUA) && npm ci --no-audit --no-fund --loglevel=error

peers: $(PEER_OPCUA)/node_modules/.package-lock.json

demo: $(STAMP)
	DAQ_SIM_CACHE=$(VENV)/sim-cache $(BIN)/daq demo $(DEMO_ARGS)

# Five workers, even on two cores: the suite's wall time is mostly waiting on sockets,
# subprocesses and servers, so three more workers fill the waits (how they share it:
# tests/conftest.py). Measured on two cores: 4 workers 170 to 174 s, 5 workers 145 to 162 s.
TEST_WORKERS ?= 5

# The suite starts hundreds of Python processes (daemons, simulators, the command line): with
# bytecode caching on (and the project compiled once before they start), each loads the project's
# compiled modules instead of compiling them again
# (an environment that turns caching off would cost each one about 0.4 s of CPU more).
test: $(STAMP) $(LINT_STAMP) peers
	$(BIN)/ruff check daq drivers simulators tests bench
	$(BIN)/ruff format --check daq drivers simulators tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench  # scripts, not a package: checked as files, strict as the rest
	$(LINT_VENV)/bin/lint-imports
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m compileall -q daq drivers simulators bench >/dev/null
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

check: test

bench: $(STAMP)
	$(BIN)/python bench/journal.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
