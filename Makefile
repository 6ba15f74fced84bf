# Every target sets up its own virtual environment on first use.
# torch==2.13.0 is installed first: a CPU wheel of it lies on these machines, while an
# unpinned torch would pull a CUDA build of several GB. The package itself asks for torch>=2.2.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test lint bench notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(PY) -m cvxlpgd.demo

test: $(STAMP)
	$(PY) -m ruff check cvxlpgd tests benchmarks tutorials/execute.py
	$(PY) -m pytest -q tests --nbmake tutorials

lint: $(STAMP)
	$(PY) -m ruff check cvxlpgd tests benchmarks tutorials/execute.py

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run
	# the default-gradient comparison at a small size (the full grid: benchmarks/DEFAULT_GRADIENT.md)
	$(PY) -m benchmarks.default_gradient --parts core readme nonzero demo --readme-seeds 20

# Re-execute every tutorial in place, storing outputs without progress-bar frames or machine paths.
notebooks: $(STAMP)
	$(PY) tutorials/execute.py tutorials/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
