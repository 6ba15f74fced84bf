"""An iterate cut off at an iteration limit is judged by its residuals, not by the solver's label:
close to optimal, it is an inaccurate solution with one warning (as CVXPY takes it); far, the item
failed. SCS says "solved (inaccurate)" in both cases."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import CvxpyLayer, SolverError, SolverWarning
from cvxlpgd.cone import ConeDims, ConeProgram
from cvxlpgd.solvers.accuracy import Residuals


def _constrained_lqr(n: int = 4, m: int = 2, horizon: int = 20):
    """cvxpylayers' constrained-LQR example in kind: a discrete-time linear system over a horizon,
    quadratic state and input costs, inputs in a box; the initial state is the parameter."""
    rng = np.random.default_rng(0)
    A = np.eye(n) + 0.1 * rng.standard_normal((n, n))
    B = rng.standard_normal((n, m))
    x0 = cp.Parameter(n, name="x0")
    x, u = cp.Variable((horizon + 1, n)), cp.Variable((horizon, m))
    constraints = [x[0] == x0, cp.abs(u) <= 0.5]
    constraints += [x[t + 1] == A @ x[t] + B @ u[t] for t in range(horizon)]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) + cp.sum_squares(u)), constraints)
    return problem, x0, u, 3.0 * rng.standard_normal((8, n))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("gradient", ["lpgd", "implicit"])
def test_constrained_lqr_runs_where_scs_stops_inaccurately(gradient: str) -> None:
    """With SCS at eps = 1e-8 and max_iters = 10,000 (the example's settings), one item stops at
    the limit through diffcp (relative residual 1.2e-4, inputs up to 0.13 outside their box): it
    is used, as CVXPY uses it, with one SolverWarning; the other items are CVXPY's solution."""
    problem, x0, u, values = _constrained_lqr()
    layer = CvxpyLayer(problem, [x0], [u], solver="SCS", gradient=gradient,
                       solver_args={"eps": 1e-8, "max_iters": 10_000})
    tensor = torch.tensor(values, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (inputs,) = layer(tensor)
    ours = [w for w in caught if issubclass(w.category, SolverWarning)]
    assert len(ours) == (1 if "optimal_inaccurate" in layer.last_statuses else 0)
    assert set(layer.last_statuses) <= {"optimal", "optimal_inaccurate"}
    inputs.sum().backward()
    assert np.isfinite(tensor.grad.numpy()).all() and np.abs(tensor.grad.numpy()).max() > 1e-3
    for i, (value, status) in enumerate(zip(values, layer.last_statuses, strict=True)):
        x0.value = value
        problem.solve(solver=cp.CLARABEL)
        if status == "optimal":
            np.testing.assert_allclose(inputs.detach().numpy()[i], u.value, atol=1e-3)
        else:  # the cut-off item: near the box, as SCS left it
            assert np.abs(inputs.detach().numpy()[i]).max() < 0.7


def _projection(a: float = -7.0, n: int = 5):
    """minimize ||x - a||^2 s.t. x >= 0: an early iterate lies near a, far below 0."""
    x, target = cp.Variable(n), cp.Parameter(n)
    return cp.Problem(cp.Minimize(cp.sum_squares(x - target)), [x >= 0]), target, x, np.full((2, n), a)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("solver", "limit", "label"), [("SCS", 5, "solved .inaccurate"), ("CLARABEL", 2, "MaxIt")]
)
def test_a_far_cut_off_iterate_is_never_returned(solver: str, limit: int, label: str) -> None:
    """SCS at max_iters = 5 says "solved (inaccurate)" with x down to -4.5 (CVXPY returns that
    point as optimal_inaccurate): the item fails."""
    problem, target, x, values = _projection()
    layer = CvxpyLayer(problem, [target], [x], solver=solver, solver_args={"max_iters": limit})
    with pytest.raises(SolverError, match=f"iteration_limit .{solver} said: item 0: {label}"):
        layer(torch.tensor(values))
    nan_layer = CvxpyLayer(problem, [target], [x], solver=solver, solver_args={"max_iters": limit},
                           on_failure="nan")
    with pytest.warns(SolverWarning, match="failed on 2 of 2"):
        (out,) = nan_layer(torch.tensor(values))
    assert np.isnan(out.numpy()).all()


@pytest.mark.timeout(60)
def test_a_close_cut_off_clarabel_iterate_is_inaccurate() -> None:
    """Clarabel stopped by max_iters = 2 ("MaxIterations") on a 2-variable LP: x = (0.99925,
    0.00094) against the optimum (1, 0), residuals below 1e-3, so the point is used, with a
    warning; after one iteration it is far, and the item fails."""
    x, c, b = cp.Variable(2), cp.Parameter(2), cp.Parameter()
    con = x[0] <= b
    problem = cp.Problem(cp.Minimize(c @ x), [con, x >= 0])
    values = [torch.tensor([-1.0, 1.0]), torch.tensor(1.0)]
    layer = CvxpyLayer(problem, [c, b], [x, con.dual_variables[0]], solver="CLARABEL")
    with pytest.warns(SolverWarning, match="only inaccurately"):
        point, dual = layer(*values, solver_args={"max_iters": 2})
    assert layer.last_statuses == ["optimal_inaccurate"]
    np.testing.assert_allclose(point.numpy(), [1.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(dual.numpy(), 1.0, atol=1e-3)
    with pytest.raises(SolverError, match="iteration_limit .CLARABEL said: item 0: MaxIterations"):
        layer(*values, solver_args={"max_iters": 1})


def test_residuals_measure_each_condition() -> None:
    """One violation at a time on min x1 + x2 s.t. x = (1, 2) (zero cone), x1 >= 0, ||(x1, x2)||
    second-order row block (t = 3): exact values of each relative residual."""
    import scipy.sparse as sp

    A = sp.csc_array(np.array([[1.0, 0], [0, 1], [-1, 0], [0, 0], [-1, 0], [0, -1]]))
    b = np.array([1.0, 2, 0, 3, 0, 0])
    program = ConeProgram(A=A, b=b, c=np.array([1.0, 1.0]), dims=ConeDims(zero=2, nonneg=1, soc=(3,)))
    x = np.array([1.0, 2.0])
    s = b - A @ x
    y = np.array([-1.0, -1, 0, 0, 0, 0])
    exact = Residuals.of(program, x, y, s)
    assert exact.largest == 0.0
    assert Residuals.of(program, x, y, s + np.array([0, 0, 0, 0, 0, 0.5])).primal == pytest.approx(0.5 / 4)
    assert Residuals.of(program, x, y - np.array([0, 0, 0.5, 0, 0, 0]), s).cone == pytest.approx(0.5 / 4)
    assert Residuals.of(program, x, y + np.array([0.5, 0, 0, 0, 0, 0]), s).dual == pytest.approx(0.5 / 2)
