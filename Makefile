# Every target does its own set-up on a fresh clone: the venv is created and the project installed on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/diffusion_demo

.PHONY: install test lint check-imports demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Fails on an import cycle in the package, imports inside functions included.
check-imports:
	python3 scripts/check_import_cycles.py

# ruff (configured in pyproject.toml: 2-space indentation, 120 columns, pyflakes rules): lint and format check.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The tests force 8 fake CPU devices themselves (tests/conftest.py).
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# The offline demo: the learned diffusion fill, trained on procedural images, against the classical peers (~9 min).
demo: $(VENV)/.installed
	$(PY) -m jaxinpaint.main --config=configs/diffusion.py:demo --workdir=$(WORKDIR)

bench: $(VENV)/.installed
	$(PY) bench/layers.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
