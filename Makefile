# The two commands of the README: `make demo` (main job) and `make test` (the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-0.1

.PHONY: demo test venv clean-demo compat-venvs

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Segment the built-in default input (a synthetic LGE-MRI left-atrium phantom, or a held-out real
# LA case when ../shared/data/LA2018 is present) with the shipped LA model -> demo_output/
demo: $(STAMP)
	$(PY) -m SemiSupCardiacSegLib.demo --out demo_output

test: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest -q Testing

clean-demo:
	rm -rf demo_output

# Python 3.9 (Slicer 5.6/5.8) and 3.12 (Slicer 5.10) venvs, outside the repository, for
# Testing/test_python_versions.py: numpy, scipy, SimpleITK, h5py; no torch (PyPI's pulls GBs of CUDA).
# pyenv's interpreters where no global python3.9 / python3.12 is on PATH.
PY39 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9.*/bin/python3.9) python3.9)
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3.12) python3.12)
COMPAT_VENVS ?= ..

compat-venvs:
	test -x $(COMPAT_VENVS)/venv39/bin/python || $(PY39) -m venv $(COMPAT_VENVS)/venv39
	$(COMPAT_VENVS)/venv39/bin/python -m pip install -q numpy scipy SimpleITK h5py
	test -x $(COMPAT_VENVS)/venv312/bin/python || $(PY312) -m venv $(COMPAT_VENVS)/venv312
	$(COMPAT_VENVS)/venv312/bin/python -m pip install -q numpy scipy SimpleITK h5py
