# qgen-sweep developer entry points. `make demo` and `make test` install what they need first.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
RUNS   ?= runs

.PHONY: install lock demo test test-slow test-all test-cluster lint bench clean

install: $(STAMP)

# constraints.txt pins every package to the release the tests ran with (the floors in
# pyproject.toml are those releases too: tests/test_packaging.py), so a fresh install tests
# what was tested even after newer releases appear.
$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Re-pin constraints.txt to what .venv holds now (after changing a dependency in pyproject.toml).
lock:
	$(PY) -m pip install --quiet -e '.[dev]'
	{ head -n 2 constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

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
