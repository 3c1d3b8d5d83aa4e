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

# every scenario in scenarios/, one at a time, then a summary table; ALL=1 adds the slow ones
scenarios: $(STAMP)
	$(BIN)/python scripts/run_scenarios.py $(if $(ALL),--all)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# benchmarks, not tests: figures go to bench/results/*.json
bench: $(STAMP)
	$(BIN)/python bench/crypto_bench.py
	$(BIN)/python bench/idle_cpu.py
	$(BIN)/python bench/payments_bench.py
	$(BIN)/python bench/chain_bench.py
	$(BIN)/python bench/scale_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

N ?= 3
chaos: $(STAMP)
	$(BIN)/python scripts/chaos.py $(N)
