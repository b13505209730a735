# echoseg developer entry points. `make demo` and `make test` install on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-all demo bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the fast suite (under 4 minutes on 2 CPU cores); slow end-to-end tests carry @pytest.mark.slow
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m 'not slow'

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

test-all: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m ''

demo: $(STAMP)
	HF_HUB_OFFLINE=1 PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/pipeline.sh

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run_all.py --timeout 5400

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check echoseg tests bench

clean:
	rm -rf $(VENV) runs demo-runs .pytest_cache
