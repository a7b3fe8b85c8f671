# Every target does its own setup, so a fresh machine needs only python3 and make.
PYTHON ?= python3
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
RUN := $(UV) run --frozen --no-sync

.PHONY: run test lint typecheck pytest soak bench bench-quick sync clean

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

pytest:
	$(RUN) pytest -q -m "not soak"

# The long randomized crash runs (at least 200; RETOUCH_SOAK_RUNS sets how many).
soak: sync
	$(RUN) pytest -q tests/reliability -m soak

bench: sync
	$(RUN) python -m bench

bench-quick: sync
	$(RUN) python -m bench --quick

clean:
	rm -rf $(TOOLS) .venv .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
