"""Random test problems with known structure (shared by the test modules)."""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np


@dataclass
class ActiveSetQP:
    """min 1/2 x'Qx + c'x  s.t.  Gx <= h, with a known solution whose active set is ``active``.

    Strict complementarity (active duals > 0, inactive slacks > 0) makes the solution map
    differentiable, so finite differences are a valid reference.
    """

    problem: cp.Problem
    params: list[cp.Parameter]
    values: list[np.ndarray]
    x: cp.Variable
    constraint: cp.Constraint


def active_set_qp(n: int, m: int, n_active: int, seed: int, quad_param: bool = True) -> ActiveSetQP:
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    Q = M @ M.T / n + np.eye(n)
    G = rng.standard_normal((m, n))
    x_star = rng.standard_normal(n)
    duals = np.zeros(m)
    duals[:n_active] = rng.uniform(0.5, 1.5, n_active)
    h = G @ x_star + np.concatenate([np.zeros(n_active), rng.uniform(0.5, 1.5, m - n_active)])
    c = -Q @ x_star - G.T @ duals

    x = cp.Variable(n, name="x")
    c_p = cp.Parameter(n, name="c")
    G_p = cp.Parameter((m, n), name="G")
    h_p = cp.Parameter(m, name="h")
    con = G_p @ x <= h_p
    if quad_param:
        Q_p = cp.Parameter((n, n), PSD=True, name="Q")
        objective = 0.5 * cp.quad_form(x, Q_p) + c_p @ x
        params, values = [c_p, G_p, h_p, Q_p], [c, G, h, Q]
    else:
        objective = 0.5 * cp.quad_form(x, Q) + c_p @ x
        params, values = [c_p, G_p, h_p], [c, G, h]
    return ActiveSetQP(cp.Problem(cp.Minimize(objective), [con]), params, values, x, con)


def random_lp(
    n: int, m: int, seed: int
) -> tuple[cp.Problem, cp.Parameter, cp.Variable, cp.Constraint, np.ndarray]:
    """min c'x s.t. Ax <= b, 0 <= x <= 1 with a random cost; returns (problem, c, x, Ax<=b, c value)."""
    rng = np.random.default_rng(seed)
    A = rng.uniform(0.0, 1.0, (m, n))
    b = A.sum(axis=1) * 0.4
    x = cp.Variable(n, name="x")
    c = cp.Parameter(n, name="c")
    con = A @ x <= b
    problem = cp.Problem(cp.Minimize(c @ x), [con, x >= 0, x <= 1])
    return problem, c, x, con, -rng.uniform(0.5, 1.5, n)
