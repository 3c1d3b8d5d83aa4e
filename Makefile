# lnemu — every target creates .venv and installs the project when needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SCENARIO ?= scenarios/demo.toml

.PHONY: run test lint bench scenario scenarios chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lnemu run $(SCENARIO)

scenario: $(STAMP)
	$(BIN)/lnemu run $(S)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/crypto_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

N ?= 3
chaos: $(STAMP)
	$(BIN)/python scripts/chaos.py $(N)
