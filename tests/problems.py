"""Random test problems with known structure (shared by the test modules)."""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np


def finite_difference(
    f, values: list[np.ndarray], index: int, symmetric: bool, step: float = 1e-6
) -> np.ndarray:
    """Central differences of scalar f w.r.t. values[index]; a symmetric parameter is perturbed
    in (i, j) and (j, i) together and the result split evenly, matching a symmetric gradient."""
    grad = np.zeros(values[index].shape)
    for idx in np.ndindex(grad.shape):
        if symmetric and idx[0] > idx[1]:
            continue
        shifted = []
        for sign in (1.0, -1.0):
            vals = [v.copy() for v in values]
            vals[index][idx] += sign * step
            if symmetric:
                vals[index][idx[::-1]] = vals[index][idx]
            shifted.append(f(vals))
        grad[idx] = (shifted[0] - shifted[1]) / (2 * step)
        if symmetric and idx[0] != idx[1]:
            grad[idx] /= 2
            grad[idx[::-1]] = grad[idx]
    return grad


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


@dataclass
class SmoothCase:
    """A problem whose solution map is differentiable at ``values`` (finite differences are a
    valid reference); ``implicit`` says whether diffcp can take it (no parametrized quad_form)."""

    name: str
    problem: cp.Problem
    params: list[cp.Parameter]
    values: list[np.ndarray]
    outputs: list[cp.Variable]
    implicit: bool = True


def least_squares(rows: int = 8, cols: int = 4, seed: int = 0) -> SmoothCase:
    """min ||F x - g||^2: F enters A, g enters b, P is the constant identity of the residual."""
    rng = np.random.default_rng(seed)
    x, F, g = cp.Variable(cols, name="x"), cp.Parameter((rows, cols), name="F"), cp.Parameter(rows, name="g")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g)))
    return SmoothCase(
        "least squares", problem, [F, g], [rng.standard_normal((rows, cols)), rng.standard_normal(rows)], [x]
    )


def projection_qp(n: int = 6, m: int = 4, seed: int = 0) -> SmoothCase:
    """min 1/2 ||x - q||^2 s.t. G x <= h, with half of the constraints active (strictly)."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((m, n))
    x0 = rng.standard_normal(n)
    active = m // 2
    h = G @ x0 + np.concatenate([np.zeros(active), rng.uniform(0.5, 1.5, m - active)])
    q = x0 + G[:active].T @ rng.uniform(0.5, 1.5, active)  # KKT: x0 - q + G_act' lambda = 0
    x = cp.Variable(n, name="x")
    q_p, G_p, h_p = cp.Parameter(n, name="q"), cp.Parameter((m, n), name="G"), cp.Parameter(m, name="h")
    con = G_p @ x <= h_p
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - q_p)), [con])
    return SmoothCase("projection QP", problem, [q_p, G_p, h_p], [q, G, h], [x, con.dual_variables[0]])


def socp_ball(n: int = 4, seed: int = 0) -> SmoothCase:
    """min c'x s.t. ||G x - h||_2 <= 1: the solution is the boundary point where -c is normal."""
    rng = np.random.default_rng(seed)
    x = cp.Variable(n, name="x")
    c, G, h = cp.Parameter(n, name="c"), cp.Parameter((n, n), name="G"), cp.Parameter(n, name="h")
    con = cp.norm2(G @ x - h) <= 1
    problem = cp.Problem(cp.Minimize(c @ x), [con])
    values = [rng.standard_normal(n), np.eye(n) + 0.3 * rng.standard_normal((n, n)), rng.standard_normal(n)]
    return SmoothCase("SOCP", problem, [c, G, h], values, [x, con.dual_variables[0]])


def entropy_exp(n: int = 4, m: int = 2, seed: int = 0) -> SmoothCase:
    """min c'x - sum(entr(x)) s.t. A x == b (exponential cones): x = exp(-1 - c - A'nu) > 0."""
    rng = np.random.default_rng(seed)
    x = cp.Variable(n, name="x")
    c, A, b = cp.Parameter(n, name="c"), cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b")
    con = A @ x == b
    problem = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), [con])
    A_val = rng.uniform(0.5, 1.5, (m, n))
    values = [rng.standard_normal(n) * 0.3, A_val, A_val @ rng.uniform(0.5, 1.5, n)]
    return SmoothCase("exponential cone", problem, [c, A, b], values, [x, con.dual_variables[0]])


def smooth_cases() -> list[SmoothCase]:
    """The five core problems of the exactness checks: QP (P, A, b, c), projection QP, least
    squares, SOCP, exponential cone."""
    qp = active_set_qp(n=5, m=6, n_active=3, seed=1)
    return [
        SmoothCase(
            "active-set QP",
            qp.problem,
            qp.params,
            qp.values,
            [qp.x, qp.constraint.dual_variables[0]],
            implicit=False,
        ),
        projection_qp(),
        least_squares(),
        socp_ball(),
        entropy_exp(),
    ]


def rhs_lp(
    seed: int,
) -> tuple[cp.Problem, list[cp.Parameter], cp.Variable, list[cp.Constraint], list[np.ndarray]]:
    """min c'x s.t. Gx <= h, x >= -1, x <= 2, sum(x) == 1: inequalities, attribute-free bound
    rows (which the simplex backends take as column bounds) and an equality; c and h are
    parameters. Returns the problem, [c, h], x, the four constraints and values for [c, h]."""
    rng = np.random.default_rng(seed)
    n, m = 8, 5
    G = rng.uniform(0.0, 1.0, (m, n))
    x = cp.Variable(n, name="x")
    c, h = cp.Parameter(n, name="c"), cp.Parameter(m, name="h")
    constraints = [G @ x <= h, x >= -1, x <= 2, cp.sum(x) == 1]
    problem = cp.Problem(cp.Minimize(c @ x), constraints)
    values = [-rng.uniform(0.5, 1.5, n), G.sum(axis=1) * 0.3 + rng.uniform(0.0, 0.2, m)]
    return problem, [c, h], x, constraints, values


def own_basis_re_solves(solver) -> tuple[list[bool], list[int], list[int]]:
    """LPGD lower-side re-solves of four 12 x 12 grid shortest-path items (costs moved by 0.3 |c|
    in a random direction) on a simplex backend ``solver``, each from its item's forward solution
    in a shared workspace and, for comparison, cold: whether each moved the vertex, and the
    pivots of the warm and of the cold re-solve. Both must reach the same vertex (asserted)."""
    from cvxlpgd import LPGD
    from cvxlpgd.compile import compile_problem
    from cvxlpgd.examples import grid_shortest_path, shortest_path_data
    from cvxlpgd.gradients.lagrangian import perturbed_program
    from cvxlpgd.program import ConicForm

    path = grid_shortest_path(12)
    compiled = compile_problem(path.problem, [path.cost], [path.flow], ConicForm("CLARABEL", quad_obj=True))
    batch = compiled.maps.apply(shortest_path_data(4, path.cost.size, seed=3)[1])
    rng = np.random.default_rng(0)
    workspace: dict = {}
    moved, warm, cold = [], [], []
    for i in range(batch.batch_size):
        item = batch.item(i)
        star = solver.solve(item, workspace=workspace)
        dx = rng.standard_normal(item.c.size)
        dx *= 0.3 * np.linalg.norm(item.c) / np.linalg.norm(dx)
        perturbed = perturbed_program(item, None, star, dx, None, 1, LPGD(tau=1.0, side="lower").step)
        from_basis = solver.solve(perturbed, warm_start=star, workspace=workspace)
        alone = solver.solve(perturbed)
        np.testing.assert_allclose(from_basis.x, alone.x, atol=1e-9)
        moved.append(not np.allclose(from_basis.x, star.x))
        warm.append(from_basis.iterations)
        cold.append(alone.iterations)
    return moved, warm, cold


def cvxpy_solution(problem: cp.Problem, params, values, solver: str, outputs) -> list[np.ndarray]:
    """``outputs``' values (variables or dual variables) after CVXPY's own solve with ``solver``
    at the parameter ``values``: the reference a layer's outputs are compared with."""
    for p, v in zip(params, values, strict=True):
        p.value = v
    problem.solve(solver=solver)
    return [np.asarray(o.value) for o in outputs]


def mixed_milp():
    """A small MILP with integer, boolean, nonnegative and bounded columns (CVXPY moves their
    bounds out of A); its costs are the parameters (the HiGHS and Gurobi tests share it)."""
    rng = np.random.default_rng(7)
    weight = rng.uniform(1.0, 3.0, 6)
    count = cp.Variable(6, integer=True, name="count")
    pick = cp.Variable(3, boolean=True, name="pick")
    slack = cp.Variable(2, nonneg=True, name="slack")
    level = cp.Variable(bounds=[-1.0, 2.5], name="level")
    value, bonus = cp.Parameter(6, name="value"), cp.Parameter(3, name="bonus")
    constraints = [
        weight @ count + pick.sum() + slack.sum() <= 7.3,
        count >= 0,
        count <= 3,
        slack[0] + level >= -0.5,
        count[0] + count[1] <= 2 + pick[0],
    ]
    objective = cp.Minimize(-value @ count - bonus @ pick + slack.sum() - 0.1 * level)
    values = [rng.uniform(1.0, 4.0, 6), rng.uniform(0.1, 2.0, 3)]
    return cp.Problem(objective, constraints), [value, bonus], [count, pick, slack, level], values
