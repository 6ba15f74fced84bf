"""The benchmark problems: five small layers (a-e) and the sparse LP of the scale sweep.

Each ``BenchProblem`` carries a CVXPY problem, its parameters and output variables, and a
sampler that draws a batch of parameter values (numpy, float64) with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from cvxlpgd.examples import grid_shortest_path, shortest_path_data

Sampler = Callable[[int, np.random.Generator], list[np.ndarray]]


@dataclass(frozen=True)
class BenchProblem:
    """A parametrized problem plus a sampler of batched parameter values."""

    key: str
    title: str
    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    sample: Sampler

    def batch(self, batch_size: int, seed: int = 0) -> list[np.ndarray]:
        """Parameter values with a leading batch dimension ``batch_size``."""
        return self.sample(batch_size, np.random.default_rng(seed))


def dense_lp(n: int = 50, m: int = 20, seed: int = 0) -> BenchProblem:
    """a) minimize c'x  s.t.  Ax <= b, 0 <= x <= 1;  parameter c."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    b = A @ rng.uniform(0.0, 1.0, n) + rng.uniform(0.1, 1.0, m)
    x, c = cp.Variable(n, name="x"), cp.Parameter(n, name="c")
    problem = cp.Problem(cp.Minimize(c @ x), [A @ x <= b, x >= 0, x <= 1])
    return BenchProblem(
        "lp",
        f"a) dense LP (n={n}, m={m})",
        problem,
        [c],
        [x],
        lambda B, r: [r.standard_normal((B, n))],
    )


def qp_projection(n: int = 100, m: int = 50, seed: int = 0) -> BenchProblem:
    """b) OptNet-style projection: minimize 1/2 ||x - q||^2  s.t.  Gx <= h;  parameters q, h."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((m, n))
    x0 = rng.standard_normal(n) * 0.5
    x, q, h = cp.Variable(n, name="x"), cp.Parameter(n, name="q"), cp.Parameter(m, name="h")
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - q)), [G @ x <= h])
    return BenchProblem(
        "qp",
        f"b) QP projection (n={n}, m={m})",
        problem,
        [q, h],
        [x],
        lambda B, r: [r.standard_normal((B, n)) * 2.0, G @ x0 + r.uniform(0.1, 1.0, (B, m))],
    )


def sparsemax(n: int = 100) -> BenchProblem:
    """c) sparsemax: minimize ||x - y||^2  s.t.  sum(x) = 1, x >= 0;  parameter y."""
    x, y = cp.Variable(n, name="x"), cp.Parameter(n, name="y")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    return BenchProblem(
        "sparsemax",
        f"c) sparsemax (n={n})",
        problem,
        [y],
        [x],
        lambda B, r: [r.standard_normal((B, n))],
    )


def socp(rows: int = 30, cols: int = 20, seed: int = 0) -> BenchProblem:
    """d) minimize ||Fx - g||_2  s.t.  ||x||_2 <= 1;  parameter g."""
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((rows, cols))
    x, g = cp.Variable(cols, name="x"), cp.Parameter(rows, name="g")
    problem = cp.Problem(cp.Minimize(cp.norm2(F @ x - g)), [cp.norm2(x) <= 1])
    return BenchProblem(
        "socp",
        f"d) SOCP (F {rows}x{cols})",
        problem,
        [g],
        [x],
        lambda B, r: [r.standard_normal((B, rows)) * 3.0],
    )


def shortest_path(grid: int = 12) -> BenchProblem:
    """e) shortest path on a grid x grid lattice as a flow LP;  parameter: edge costs."""
    sp_problem = grid_shortest_path(grid)
    edges = len(sp_problem.edges)
    return BenchProblem(
        "path",
        f"e) shortest path ({grid}x{grid} grid, {edges} edges)",
        sp_problem.problem,
        [sp_problem.cost],
        [sp_problem.flow],
        lambda B, r: [shortest_path_data(B, edges, seed=int(r.integers(1 << 31)))[1]],
    )


def all_problems() -> list[BenchProblem]:
    """Problems a) to e) in order."""
    return [dense_lp(), qp_projection(), sparsemax(), socp(), shortest_path()]


def sparse_lp(
    n: int, rows_per_var: int = 2, nnz_per_row: int = 3, window: int = 10, seed: int = 0
) -> BenchProblem:
    """Scale sweep: minimize c'x  s.t.  Ax <= b, 0 <= x <= 1 with A sparse (``rows_per_var * n`` rows).

    Row r touches column r // rows_per_var and ``nnz_per_row - 1`` random columns within
    ``window`` of it, so the pattern is random but banded (a factorization stays sparse).
    ``b = A x0 + slack`` with ``x0`` inside the box, so the LP is feasible and bounded.
    """
    rng = np.random.default_rng(seed)
    m = rows_per_var * n
    center = np.arange(m) // rows_per_var
    offsets = rng.integers(-window, window + 1, size=(m, nnz_per_row - 1))
    cols = np.concatenate([center[:, None], np.clip(center[:, None] + offsets, 0, n - 1)], axis=1)
    rows = np.repeat(np.arange(m), nnz_per_row)
    A = sp.csr_array((rng.standard_normal(m * nnz_per_row), (rows, cols.ravel())), shape=(m, n))
    A.sum_duplicates()
    b = A @ rng.uniform(0.0, 1.0, n) + rng.uniform(0.1, 1.0, m)
    x, c = cp.Variable(n, name="x"), cp.Parameter(n, name="c")
    problem = cp.Problem(cp.Minimize(c @ x), [A @ x <= b, x >= 0, x <= 1])
    return BenchProblem(
        f"sparse_lp_{n}",
        f"sparse LP n={n}, m={m}, nnz(A)={A.nnz}",
        problem,
        [c],
        [x],
        lambda B, r: [r.standard_normal((B, n))],
    )
