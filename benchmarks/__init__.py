"""Benchmark suite for cvxlpgd: ``python -m benchmarks.run`` / ``make bench``."""
