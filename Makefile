# The two commands of the README: `make demo` (main job) and `make test` (the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-0.1

.PHONY: demo test venv clean-demo

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
	$(PY) -m pytest -q Testing

clean-demo:
	rm -rf demo_output
