# fastgw: two commands for a newcomer.
#   make demo   create .venv, install, run the demo gateway
#   make test   create .venv, install with the C extension, lint, type-check, run the suite
#               with the extension and again with the pure-Python twin
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck test-c test-py bench bench-micro clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml setup.py fastgw/_speedups.pyx $(wildcard fastgw/*.pxi)
	FASTGW_EXTENSION=1 $(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/fastgw demo

test: $(VENV)/.installed-dev lint typecheck test-c test-py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check fastgw tests bench
	$(BIN)/ruff format --check fastgw tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test-c: $(VENV)/.installed-dev
	FASTGW_EXTENSION=1 $(BIN)/pytest -q

test-py: $(VENV)/.installed-dev
	FASTGW_NO_EXTENSIONS=1 $(BIN)/pytest -q

bench-micro: $(VENV)/.installed-dev
	$(BIN)/python bench/micro/bench_speedups.py

bench: $(VENV)/.installed-dev
	$(BIN)/python -c "import aiohttp" 2>/dev/null || $(BIN)/pip install -q 'aiohttp>=3.9'
	bash bench/run.sh

clean:
	rm -rf $(VENV) build *.egg-info fastgw/*.so fastgw/_speedups.c fastgw/_speedups.html
