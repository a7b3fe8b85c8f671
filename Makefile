# Every target does its own setup, so a fresh machine needs only python3 and make.
PYTHON ?= python3
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
RUN := $(UV) run --frozen --no-sync

.PHONY: run test lint typecheck pytest pytest-postgres soak bench bench-quick sync clean

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv>=0.5,<1"

sync: $(if $(findstring $(TOOLS),$(UV)),$(TOOLS)/bin/uv)
	$(UV) sync --frozen

run: sync
	$(RUN) python -m bot run

test: sync lint typecheck pytest

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports

typecheck:
	$(RUN) mypy bot cogs storage tests bench

# Two passes, each spread over four test processes (the tests mostly wait on sockets and
# subprocesses, so four share two cores well): everything on SQLite (the storage-level tests and
# the credit state machine take both stores in that pass), then the end-to-end and crash suites
# again with every bot on a fresh PostgreSQL database from tests/postgres.py.
PYTEST := $(RUN) pytest -q -n 4

pytest:
	$(PYTEST) -m "not soak"
	$(MAKE) --no-print-directory pytest-postgres

pytest-postgres: sync
	RETOUCH_TEST_STORE=postgresql $(PYTEST) -m "not soak and not sqlite_only" tests/e2e tests/reliability

# The long randomized crash runs (at least 200; RETOUCH_SOAK_RUNS sets how many).
soak: sync
	$(PYTEST) tests/reliability -m soak

bench: sync
	$(RUN) python -m bench

bench-quick: sync
	$(RUN) python -m bench --quick

clean:
	rm -rf $(TOOLS) .venv .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
