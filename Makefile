# echoseg developer entry points. `make demo` and `make test` install on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m ''

demo: $(STAMP)
	HF_HUB_OFFLINE=1 PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/pipeline.sh

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run_all.py --timeout 5400

lint: $(STAMP)
	$(BIN)/ruff check echoseg tests bench

clean:
	rm -rf $(VENV) runs demo-runs .pytest_cache
