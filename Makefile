# qgen-sweep developer entry points. `make demo` and `make test` install what they need first.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
RUNS   ?= runs

.PHONY: install demo test test-slow test-all test-cluster lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The embedded default: the offline smoke sweep end to end (digits data, CPU), then its report.
demo: install
	$(VENV)/bin/qgen-sweep launch smoke --results-dir $(RUNS)/smoke
	$(VENV)/bin/qgen-sweep report smoke --results-dir $(RUNS)/smoke

# Fast, CPU-only tests (slow / gpu / cluster markers are deselected by default).
test: install
	$(PY) -m pytest -q

# Tests marked slow (torch.compile on the CPU, the ASHA search): about 2 minutes on 2 cores.
test-slow: install
	$(PY) -m pytest -q -m slow

# Everything that runs on a CPU machine, including slow tests.
test-all: install
	$(PY) -m pytest -q -m 'not gpu'

test-cluster: install
	$(PY) -m pytest -q -rs -m cluster

lint: install
	$(VENV)/bin/ruff check qgen_sweep tests benchmarks

bench: install
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(RUNS) .pytest_cache build dist *.egg-info
