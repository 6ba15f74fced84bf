"""Benchmark suite for cvxlpgd (issue 3): ``python -m benchmarks.run`` / ``make bench``."""
