# Two commands set up and run everything on a fresh machine with Python >= 3.10:
#   make demo   install into .venv (when missing) and train the default experiment
#   make test   install into .venv (when missing) and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
TEST_WORKERS ?= 3  # pytest-xdist processes (on 2 cores: a third fills the others' Python-bound gaps); each test file runs whole on one of them.

.PHONY: demo test bench clean
demo: $(VENV)/.installed
	$(PY) run.py --config=configs/lm.py:tiny --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

clean:
	rm -rf $(VENV) runs *.egg-info
