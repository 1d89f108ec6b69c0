# Every target does its own set-up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint typecheck bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/callqueue up

lint: typecheck
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

# mypy --strict on src, tests and bench. Each conftest.py below tests/ is a module named
# `conftest` (pytest imports test files by bare name), so each gets a call of its own.
typecheck: $(STAMP)
	$(BIN)/mypy
	for conftest in tests/*/conftest.py; do \
	  MYPYPATH=tests:tests/e2e:tests/integration:tests/api:tests/chaos $(BIN)/mypy $$conftest || exit 1; \
	done

# Everything, with branch coverage of src/callqueue, in the Python processes the tests start
# too. The figure is printed, not enforced; `.venv/bin/coverage report` gives it by file.
test: lint
	rm -f .coverage .coverage.*
	$(BIN)/pytest -q --cov --cov-report=
	@echo "coverage of src/callqueue (lines and branches): $$($(BIN)/coverage report --format=total)%"

# Unit and API tests without the slow ones (the markers are in pyproject.toml).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not (slow or e2e or cluster)" tests/unit tests/api

bench: $(STAMP)
	$(BIN)/python -m bench.run

# The full chaos runs (5,000 calls each, several faults; about 9 minutes), then the engine
# model's long run (about 5). Their short forms are part of `make test`. The chaos table is
# printed and written to .chaos/results.json.
chaos: $(STAMP)
	CHAOS_FULL=1 $(BIN)/pytest -q -m chaos tests/chaos
	ENGINE_MODEL_PROFILE=chaos $(BIN)/pytest -q -m model tests/integration/test_engine_model.py

clean:
	rm -rf $(VENV) .callqueue .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
