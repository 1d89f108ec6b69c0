# Every target does its own set-up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/callqueue up

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: lint

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run

# The full chaos runs (5,000 calls each, several faults; about 9 minutes), then the engine
# model's long run (about 5). Their short forms are part of `make test`. The chaos table is
# printed and written to .chaos/results.json.
chaos: $(STAMP)
	CHAOS_FULL=1 $(BIN)/pytest -q -m chaos tests/chaos
	ENGINE_MODEL_PROFILE=chaos $(BIN)/pytest -q -m model tests/integration/test_engine_model.py

clean:
	rm -rf $(VENV) .callqueue .pytest_cache .mypy_cache .ruff_cache
