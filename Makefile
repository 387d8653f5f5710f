# Two commands do all set-up on a fresh machine (see README):
#   make demo   - the mini S2L-PO study on the embedded CPU default -> results/
#   make test   - lint + the whole test suite (what .ci/run runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the local CPU wheel; first, so nothing pulls CUDA wheels
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) experiments/study.py

test: $(STAMP)
	$(PY) -m ruff check s2lpo experiments analysis benchmarks tests
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_trainer_vs_trl.py
