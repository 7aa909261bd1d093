# The two commands a newcomer needs: `make demo` and `make test`.
# Everything else here is what those two need on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit integration install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Run the whole migration end to end on the embedded defaults (broker, worker, sink, report).
demo: install
	$(BIN)/migration-ledger demo

## Lint, type-check and run every test against a real broker the suite starts and stops
## (one broker for the whole run, shared by the parallel workers). Under CI (CI set, as
## .ci/run does) hypothesis is derandomized. --durations=15 names the slowest tests, so a slow
## one is seen when it lands. TEST_WORKERS=1 runs them in one process.
TEST_WORKERS ?= 2
test: install lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --durations=15

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
