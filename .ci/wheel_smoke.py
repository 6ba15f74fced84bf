"""Smoke test of an installed cvxlpgd (`make wheel-test`): run from outside the repository.

Checks what a user of the wheel gets: the package comes from site-packages, not from a checkout;
its metadata and ``__version__`` agree; it ships ``py.typed``; every public name imports; a layer
reproduces CVXPY's own solution; LPGD and the implicit gradient match finite differences.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import cvxpy as cp
import numpy as np
import torch

import cvxlpgd

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(cvxlpgd.__file__).resolve().parent


def check_install() -> None:
    assert PACKAGE != REPO / "cvxlpgd", f"cvxlpgd was imported from the checkout ({PACKAGE})"
    assert "site-packages" in PACKAGE.parts, f"cvxlpgd is not an installed package ({PACKAGE})"
    assert importlib.metadata.version("cvxlpgd") == cvxlpgd.__version__
    assert (PACKAGE / "py.typed").is_file(), "py.typed is missing from the wheel"
    for name in cvxlpgd.__all__:
        getattr(cvxlpgd, name)


def check_forward_matches_cvxpy() -> None:
    rng = np.random.default_rng(0)
    n, m = 8, 5
    x, c = cp.Variable(n), cp.Parameter(n)
    budget = rng.uniform(0.5, 1.0, (m, n)) @ x <= 2.0
    problem = cp.Problem(cp.Minimize(c @ x), [budget, x >= 0, x <= 1])
    layer = cvxlpgd.CvxpyLayer(problem, [c], [x, budget.dual_variables[0]], solver="CLARABEL")
    c.value = rng.standard_normal(n)
    x_star, y_star = layer(torch.tensor(c.value))
    problem.solve(solver=cp.CLARABEL)
    assert np.allclose(x_star.numpy(), x.value, atol=1e-6), (x_star, x.value)
    assert np.allclose(y_star.numpy(), budget.dual_value, atol=1e-6), (y_star, budget.dual_value)


def check_gradients_match_finite_differences() -> None:
    """d/dc of w'x*(c) for the projection QP  min 1/2 |x|^2 + c'x  s.t.  0 <= x <= 1."""
    n = 6
    x, c = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + c @ x), [x >= 0, x <= 1])
    c0 = np.array([-0.5, -0.2, 0.3, -0.7, -1.5, 0.1])
    w = np.linspace(1.0, 2.0, n)

    def loss(cost: np.ndarray) -> float:
        c.value = cost
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        return float(w @ x.value)

    h = 1e-5
    expected = np.array([(loss(c0 + h * e) - loss(c0 - h * e)) / (2 * h) for e in np.eye(n)])
    for gradient in (cvxlpgd.LPGD(tau=1e-4), "implicit", "lpgd"):
        layer = cvxlpgd.CvxpyLayer(
            problem, [c], [x], solver="SCS", gradient=gradient, solver_args={"eps": 1e-10}
        )
        cost = torch.tensor(c0, requires_grad=True)
        (layer(cost)[0] @ torch.tensor(w)).backward()
        error = np.abs(cost.grad.numpy() - expected).max()
        assert error < 1e-6, (gradient, error, cost.grad, expected)


def check_errors_name_the_culprit() -> None:
    x, c = cp.Variable(3), cp.Parameter(3)
    layer = cvxlpgd.CvxpyLayer(cp.Problem(cp.Minimize(c @ x), [x >= 0, x <= 1]), [c], [x])
    try:
        layer(torch.zeros(4))
    except ValueError as error:
        assert "shape" in str(error), error
    else:
        raise AssertionError("a wrong shape did not raise")


if __name__ == "__main__":
    check_install()
    check_forward_matches_cvxpy()
    check_gradients_match_finite_differences()
    check_errors_name_the_culprit()
    print(f"cvxlpgd {cvxlpgd.__version__} from {PACKAGE}: install, forward, gradients and errors OK")
