# Two entry points for a fresh machine (see README):
#   make quickstart   install, then run dense, q and pqd on the embedded digits data and print the verdict
#   make test         install, then run the test suite
#   make lint         install, then the checks CI runs first (ruff, snakefmt)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install quickstart test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: these wheels are the ones the project is tested with
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/snakemake -j2
	@cat results/resnet20_digits/summary.md

# one worker process per logical CPU (pytest-xdist), whole files each: a single process left a core idle about
# 40% of the time (BENCHMARKS.md section 3)
test: install
	$(PY) -m pytest -q -n logical --dist loadfile --no-loadscope-reorder

# what CI checks before the tests: ruff (lint and format, settings in pyproject.toml) and snakefmt
lint: install
	$(VENV)/bin/ruff check pqd bench tests
	$(VENV)/bin/ruff format --check pqd bench tests
	$(VENV)/bin/snakefmt --check Snakefile rules

clean:
	rm -rf results logs benchmarks .snakemake
