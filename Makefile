# Every target does its own set-up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint typecheck bench clean

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
	for conftest in tests/*/conftest.py; do $(BIN)/mypy $$conftest || exit 1; done

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

clean:
	rm -rf $(VENV) .callqueue .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
