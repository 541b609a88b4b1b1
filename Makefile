# The two commands of the README: `make demo` (the main job) and `make test` (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test fast lint typecheck unit bench clean-dev

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,litellm]'
	touch $@

# kafkajs and TypeScript for the TypeScript producer of docs/events.md, which the tests run.
TS_EXAMPLE := docs/examples/typescript
$(TS_EXAMPLE)/node_modules/.installed: $(TS_EXAMPLE)/package-lock.json
	cd $(TS_EXAMPLE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# ajv and ajv-formats for the JSON Schema property test: the lockfile pins them (npm ci).
JS := tests/js
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --no-audit --no-fund --loglevel=error
	touch $@

install: $(BIN)/.installed $(TS_EXAMPLE)/node_modules/.installed $(JS)/node_modules/.installed

demo: install
	$(BIN)/ledger demo

lint: install
	$(BIN)/ruff check ledger projections readmodels ops integrations tests bench tools

typecheck: install
	$(BIN)/mypy

# Test processes, each with its own PostgreSQL and broker (pytest-xdist; 0 runs in-process).
TEST_PROCESSES ?= 2

unit: install
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist worksteal --durations=20

test: lint typecheck unit

# While editing: the tests that need no server and start no child process (marked by
# tests/conftest.py and by hand, see the markers in pyproject.toml); `make test` runs them all.
fast: $(BIN)/.installed
	$(BIN)/pytest -q -m "not servers and not slow"

$(BIN)/.bench-installed: pyproject.toml $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: install $(BIN)/.bench-installed
	$(BIN)/python bench/run_all.py

clean-dev: install
	$(BIN)/ledger dev down
