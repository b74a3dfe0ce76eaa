# Two commands for a newcomer: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run explore test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the declared dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed  ## the 双11 demo: a sale that goes wrong and is put right (see README)
	$(BIN)/promoguard demo --fast --exit

explore: $(VENV)/.installed  ## serve what the last demo did (its database and keys) on :8000
	set -a && . ./promoguard-demo/demo.env && set +a && \
		PROMOGUARD_MEMBER_TIERS_URL= PROMOGUARD_PAYMENT_PROVIDER_URL= $(BIN)/promoguard serve

test: $(VENV)/.installed  ## lint, type-check and run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2

bench: $(VENV)/.installed
	$(BIN)/python bench/pricing.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
