# make demo: install into .venv (if needed) and run the whole pipeline on the bundled demo data.
# make sweep PROFILE=sdturbo: the SD-Turbo study's eight ratios as queued dvc experiments, one at a time.
# make test: the test suite (CI runs exactly this), on both cores; make test-fast: all but the real dvc pipeline runs.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test test-fast bench lint clean-demo sweep

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip check
	touch $@

demo: install
	@git rev-parse HEAD >/dev/null 2>&1 || { echo "make demo needs a git checkout with a commit (dvc exp run)"; exit 1; }
	dvc exp run -S profile=demo
	synthmri summary

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-fast: install  # the inner loop: everything but the real dvc pipeline runs
	$(BIN)/python -m pytest -q -m "not slow" -n 2

PROFILE ?= sdturbo
sweep: install
	synthmri sweep --profile $(PROFILE)

bench: install
	$(BIN)/python bench/dedup.py --images 3000
	$(BIN)/python bench/preprocess.py
