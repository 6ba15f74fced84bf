# Every target sets up its own virtual environment on first use.
# torch==2.13.0 is installed first: a CPU wheel of it lies on these machines, while an
# unpinned torch would pull a CUDA build of several GB. The package itself asks for torch>=2.2.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
DOCS_STAMP := $(VENV)/.installed-docs
PACKAGE_STAMP := $(VENV)/.installed-package
# Fresh environments of their own: the wheel alone, and the dependency floors alone.
WHEEL_VENV := .venv-wheel
FLOORS_VENV := .venv-floors
# The core subset `make floors` runs: forward against CVXPY, gradients against finite differences,
# cvxpylayers' API, HiGHS, the solver protocol, DGP (about half a minute).
CORE_TESTS := tests/test_forward_matches_cvxpy.py tests/test_gradients_vs_finite_differences.py \
	tests/test_cvxpylayers_compat.py tests/test_highs.py tests/test_solver_protocol.py tests/test_dgp.py

.PHONY: demo test lint bench notebooks docs wheel-test floors clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

$(PACKAGE_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[package]"
	touch $(PACKAGE_STAMP)

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

# The documentation site, warnings as errors, then a check of its internal links and images.
# The source is the repository root (docs/conf.py says why); notebooks are not executed.
docs: $(DOCS_STAMP)
	rm -rf docs/_build
	$(PY) -m sphinx -E -W --keep-going -q -b html -c docs . docs/_build/html
	$(PY) docs/check_site.py docs/_build/html

# Build the sdist and the wheel (from the sdist), check their metadata, install the wheel alone
# into a fresh environment and run a smoke test of the public API from outside the repository.
wheel-test: $(PACKAGE_STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(PY) -m build -q --outdir dist .
	$(PY) -m twine check --strict dist/*
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q torch==2.13.0
	$(WHEEL_VENV)/bin/python -m pip install -q dist/*.whl
	cd "$$(mktemp -d)" && "$(CURDIR)/$(WHEEL_VENV)/bin/python" "$(CURDIR)/.ci/wheel_smoke.py"

# A fresh environment with every core dependency at exactly the floor pyproject.toml states
# (torch at 2.13.0, the build these machines carry), then the core tests.
floors:
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install -q torch==2.13.0
	$(PYTHON) .ci/floors.py --skip torch > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install -q -r $(FLOORS_VENV)/floors.txt -e . pytest pytest-timeout hypothesis
	$(FLOORS_VENV)/bin/python .ci/floors.py --skip torch --check
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS)

clean:
	rm -rf $(VENV) $(WHEEL_VENV) $(FLOORS_VENV) .pytest_cache .ruff_cache .hypothesis dist docs/_build
