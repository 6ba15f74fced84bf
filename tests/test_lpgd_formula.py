"""The CVXPY-level LPGD reference itself (tests/lpgd_formula.py): its table of CVXPY's dual signs,
and its agreement with the layer on dual outputs of each constraint kind."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpy.constraints import NonNeg, Zero
from lpgd_formula import lpgd_formula_gradient, shifted, sigma

from cvxlpgd import LPGD, CvxpyLayer

TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
N = 4
# min |x - a|^2 with a chosen so that each constraint below is active with nonzero duals.
TARGET = np.array([1.5, -1.0, 0.3, 0.8])


def _constraints(x: cp.Variable) -> dict[str, cp.Constraint]:
    return {
        "<=": x <= 0.2,
        ">=": x >= -0.2,
        "==": cp.sum(x) == 5.0,
        "Zero": Zero(cp.sum(x) - 5.0),
        "NonNeg": NonNeg(x + 0.2),
        "SOC": cp.SOC(cp.Constant(np.array([0.5])), x),
    }


@pytest.mark.parametrize("kind", ["<=", ">=", "==", "Zero", "NonNeg", "SOC"])
def test_dual_sign_convention(kind: str) -> None:
    """Moving e(x) to e(x) + eps d changes the optimal value by sigma eps <lambda, d>: the sign the
    reference gives each constraint's Lagrangian term is CVXPY's."""
    x = cp.Variable(N)
    objective = cp.Minimize(cp.sum_squares(x - TARGET))
    constraint = _constraints(x)[kind]
    cp.Problem(objective, [constraint]).solve(cp.CLARABEL, **TIGHT)
    duals = constraint.dual_value if len(constraint.dual_variables) > 1 else [constraint.dual_value]
    duals = [np.reshape(d, v.shape) for d, v in zip(duals, constraint.dual_variables, strict=True)]
    rng = np.random.default_rng(0)
    directions = [rng.standard_normal(v.shape) for v in constraint.dual_variables]
    eps = 1e-5
    values = []
    for s in (1, -1):
        moved = shifted(constraint, [cp.Constant(s * eps * d) for d in directions])
        problem = cp.Problem(objective, [moved])
        problem.solve(cp.CLARABEL, **TIGHT)
        values.append(problem.value)
    slope = (values[0] - values[1]) / (2 * eps)
    inner = sum(float(np.sum(d * u)) for d, u in zip(duals, directions, strict=True))
    assert abs(inner) > 0.1  # the constraint is active: the comparison is not between zeros
    assert abs(slope - sigma(constraint) * inner) <= 1e-5 * abs(inner), (slope, inner)


def _problem_with_dual_outputs():
    """min |x|^2 - 2 a'x  s.t.  sum(x) == s,  x >= -0.2,  (r, x) in SOC: every dual an output.
    The objective is written expanded so that the conic form has no variable besides x (with
    ``sum_squares(x - a)`` CVXPY adds one, see test_proximal_term_on_an_auxiliary_variable)."""
    x = cp.Variable(N, name="x")
    a, s, r = cp.Parameter(N, name="a"), cp.Parameter(name="s"), cp.Parameter(name="r")
    equality, bound, ball = cp.sum(x) == s, x >= -0.2, cp.SOC(r, x)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) - 2 * a @ x), [equality, bound, ball])
    outputs = [x, equality.dual_variables[0], bound.dual_variables[0], *ball.dual_variables]
    return problem, [a, s, r], outputs, [TARGET, np.array(1.2), np.array(1.0)]


def _layer_and_reference(problem, params, outputs, values, config: LPGD):
    args = {"eps": 1e-9}
    layer = CvxpyLayer(problem, params, outputs, solver="CLARABEL", gradient=config, solver_args=args)
    rng = np.random.default_rng(1)
    out_grads = [rng.standard_normal(o.shape) for o in outputs]
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = layer(*tensors)
        sum((r * torch.tensor(g)).sum() for r, g in zip(results, out_grads, strict=True)).backward()
    got = np.concatenate([t.grad.numpy().ravel() for t in tensors])
    want = np.concatenate([g.ravel() for g in lpgd_formula_gradient(layer, values, out_grads, config)])
    return got, want


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rho", [0.0, 0.3])
@pytest.mark.parametrize("side", ["central", "lower", "upper"])
def test_layer_equals_reference_with_dual_outputs(side: str, rho: float) -> None:
    """Dual outputs of ==, >= and SOC constraints: the layer's LPGD equals the reference's."""
    got, want = _layer_and_reference(*_problem_with_dual_outputs(), LPGD(tau=0.5, rho=rho, side=side))
    assert np.abs(want).max() > 0.1
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max()


@pytest.mark.timeout(120)
@pytest.mark.xfail(
    strict=True,
    reason="LPGD's proximal term acts on the conic variables, here also on the t = x - a CVXPY adds "
    "for sum_squares(x - a): the gradient for rho > 0 depends on how the objective is written",
)
def test_proximal_term_on_an_auxiliary_variable() -> None:
    """The same problem written as sum_squares(x - a): for rho > 0 the gradient should not change."""
    problem, params, outputs, values = _problem_with_dual_outputs()
    x, a = problem.variables()[0], params[0]
    rewritten = cp.Problem(cp.Minimize(cp.sum_squares(x - a)), problem.constraints)
    got, want = _layer_and_reference(rewritten, params, outputs, values, LPGD(tau=0.5, rho=0.3))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max()
