# kaizen — `make run` (the main job on the embedded default) and `make test`; both set up a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kaizen-installed

.PHONY: setup run test lint typecheck contracts unit integration bench clean asyncapi-cli

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kaizen needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/kaizen run

lint: setup
	$(BIN)/ruff check kaizen streams agents connectors mcp_server benchmarks tests

typecheck: setup
	$(BIN)/mypy

# The layers (kaizen > agents | mcp_server > connectors > streams) and pure logic free of IO libraries.
contracts: setup
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest -m "not integration" -q

integration: setup
	$(BIN)/pytest -m integration -q

# The AsyncAPI CLI validates docs/asyncapi.yaml in the suite (tests/unit/test_asyncapi.py). 4.1.1: the last
# release that runs on the Node of Debian 12 (5.x and 6.x need Node >= 24).
ASYNCAPI_CLI := .kaizen/tools/node_modules/.bin/asyncapi
$(ASYNCAPI_CLI):
	npm install --no-save --no-audit --no-fund --loglevel=error --prefix .kaizen/tools @asyncapi/cli@4.1.1

asyncapi-cli: $(ASYNCAPI_CLI)

test: lint typecheck contracts asyncapi-cli
	$(BIN)/pytest -q -ra --durations=15

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/kaizen bench --output bench.json

clean:
	rm -rf $(VENV) .kaizen test-artifacts .pytest_cache .mypy_cache .ruff_cache
