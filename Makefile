# Every target creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEV    := $(VENV)/.dev-installed
BENCH  := $(VENV)/.bench-installed
# The CPU build of torch that lies on this machine's disk; any other version pulls several GB.
TORCH  := torch==2.13.0
LINTED := src tests $(wildcard benchmarks examples)

.PHONY: demo test lint typecheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(DEV): pyproject.toml | $(PY)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,torch]'
	touch $@

$(BENCH): $(DEV)
	$(PY) -m pip install -q -e '.[dev,torch,bench]'
	touch $@

demo: $(DEV)
	$(VENV)/bin/eightbit fi 0.0269
	$(VENV)/bin/eightbit fi 3.14159265358979 --word-length 16

lint: $(DEV)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

typecheck: $(DEV)
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest

bench: $(BENCH)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
