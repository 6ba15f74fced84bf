"""Forward pass: solutions and duals agree with CVXPY's own solve for every problem class, both
solvers, batched and unbatched; shapes, dtypes and batching follow cvxpylayers' rules."""

from __future__ import annotations

from collections.abc import Callable

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpy.utilities import scopes

from cvxlpgd import CvxpyLayer, SolverError

ACCURATE = {"SCS": {"eps": 1e-9, "max_iters": 100_000}, "CLARABEL": {"eps": 1e-9}}
# The same tolerances in CVXPY's own spelling, for the reference solves.
CVXPY_ACCURATE = {
    "SCS": {"eps": 1e-9, "max_iters": 100_000},
    "CLARABEL": {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9},
}
Case = tuple[cp.Problem, list[cp.Parameter], list, Callable[[np.random.Generator], list[np.ndarray]]]


def lp() -> Case:
    x, c = cp.Variable(4), cp.Parameter(4)
    A = np.array([[1.0, 2, 0, 1], [0, 1, 3, 1]])
    cons = [A @ x <= np.array([4.0, 5.0]), x >= 0, cp.sum(x) == 2]
    problem = cp.Problem(cp.Minimize(c @ x), cons)
    return (
        problem,
        [c],
        [x, cons[0].dual_variables[0], cons[2].dual_variables[0]],
        lambda rng: [rng.uniform(-1, 1, 4)],
    )


def qp() -> Case:
    x, q, h = cp.Variable(3), cp.Parameter(3), cp.Parameter(2)
    G = np.array([[1.0, 1, 1], [1, -1, 0]])
    cons = [G @ x <= h]
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - q)), cons)
    return (
        problem,
        [q, h],
        [x, cons[0].dual_variables[0]],
        lambda rng: [rng.standard_normal(3) + 1, rng.uniform(0, 0.5, 2)],
    )


def qp_with_psd_parameter() -> Case:
    x, c, Q = cp.Variable(3), cp.Parameter(3), cp.Parameter((3, 3), PSD=True)
    cons = [x >= -1, x <= 1]
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + c @ x), cons)

    def values(rng: np.random.Generator) -> list[np.ndarray]:
        M = rng.standard_normal((3, 3))
        return [rng.standard_normal(3) * 2, M @ M.T + 0.5 * np.eye(3)]

    return problem, [c, Q], [x, cons[1].dual_variables[0]], values


def socp() -> Case:
    x, g = cp.Variable(3), cp.Parameter(5)
    F = np.arange(15.0).reshape(5, 3) / 10 - 0.5
    cons = [cp.norm(x, 2) <= 1, x[0] >= -0.5]
    problem = cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2)), cons)
    return (
        problem,
        [g],
        [x, cons[0].dual_variables[0], cons[1].dual_variables[0]],
        lambda rng: [rng.standard_normal(5) * 3],
    )


def exponential() -> Case:
    x, c = cp.Variable(3), cp.Parameter(3)
    cons = [cp.sum(x) == 1, x >= 0]
    problem = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), cons)
    return (
        problem,
        [c],
        [x, cons[0].dual_variables[0], cons[1].dual_variables[0]],
        lambda rng: [rng.standard_normal(3)],
    )


def sdp() -> Case:
    X, C = cp.Variable((3, 3), symmetric=True), cp.Parameter((3, 3), symmetric=True)
    cons = [X >> 0, cp.trace(X) == 1]
    problem = cp.Problem(cp.Minimize(cp.trace(C @ X)), cons)

    def values(rng: np.random.Generator) -> list[np.ndarray]:
        M = rng.standard_normal((3, 3))
        return [M + M.T]

    return problem, [C], [X, cons[0].dual_variables[0], cons[1].dual_variables[0]], values


def power() -> Case:
    x, c = cp.Variable(3), cp.Parameter(3)
    cons = [cp.sum(x) <= 3, x >= 0.1]
    problem = cp.Problem(cp.Minimize(c @ x + cp.sum(cp.power(x, 1.5))), cons)
    return problem, [c], [x, cons[0].dual_variables[0]], lambda rng: [rng.uniform(-2, 0, 3)]


CASES = {f.__name__: f for f in (lp, qp, qp_with_psd_parameter, socp, exponential, sdp, power)}


def _cvxpy_reference(problem: cp.Problem, params, outputs, values, solver: str) -> list[np.ndarray]:
    for p, v in zip(params, values, strict=True):
        p.value = v
    with scopes.quad_form_dpp_scope():
        problem.solve(solver=solver, **CVXPY_ACCURATE[solver])
    assert problem.status == cp.OPTIMAL
    return [np.asarray(o.value) for o in outputs]


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_duals_match_cvxpy(name: str, solver: str) -> None:
    problem, params, outputs, sample = CASES[name]()
    layer = CvxpyLayer(problem, params, outputs, solver=solver, solver_args=ACCURATE[solver])
    rng = np.random.default_rng(0)
    batch = [sample(rng) for _ in range(3)]
    stacked = [torch.tensor(np.stack(vals)) for vals in zip(*batch, strict=True)]
    batched = layer(*stacked)
    for item, values in enumerate(batch):
        expected = _cvxpy_reference(problem, params, outputs, values, solver)
        single = layer(*[torch.tensor(v) for v in values])
        for out, got_batched, got_single, want in zip(outputs, batched, single, expected, strict=True):
            assert got_single.shape == want.shape
            scale = max(1.0, np.abs(want).max())
            assert np.abs(got_single.numpy() - want).max() <= 1e-5 * scale, f"{name} {out.name()} item {item}"
            assert np.abs(got_batched[item].numpy() - want).max() <= 1e-5 * scale


def test_dtype_and_batch_shapes() -> None:
    problem, params, outputs, sample = lp()
    layer = CvxpyLayer(problem, params, outputs, solver_args=ACCURATE["SCS"])
    c = torch.tensor(sample(np.random.default_rng(1))[0], dtype=torch.float32)
    x, y_ineq, y_eq = layer(c)
    assert x.dtype == torch.float32 and x.shape == (4,) and y_ineq.shape == (2,) and y_eq.shape == ()
    (x1, *_), (x5, *_) = layer(c[None]), layer(c.expand(5, 4))
    assert x1.shape == (1, 4) and x5.shape == (5, 4) and x1.dtype == torch.float32
    assert torch.allclose(x1[0], x, atol=1e-5) and torch.allclose(x5, x.expand(5, 4), atol=1e-5)


def test_unbatched_parameter_broadcasts() -> None:
    problem, params, outputs, sample = qp()
    layer = CvxpyLayer(problem, params, outputs, solver="CLARABEL")
    rng = np.random.default_rng(2)
    qs = torch.tensor(np.stack([sample(rng)[0] for _ in range(4)]), requires_grad=True)
    h = torch.tensor([0.2, 0.1], requires_grad=True)
    x, _ = layer(qs, h)
    assert x.shape == (4, 3)
    for i in range(4):
        assert torch.allclose(x[i], layer(qs[i], h)[0], atol=1e-7)
    x.sum().backward()
    assert qs.grad.shape == (4, 3) and h.grad.shape == (2,)
    # The unbatched parameter's gradient sums the per-item gradients.
    per_item = []
    for i in range(4):
        hi = h.detach().clone().requires_grad_(True)
        layer(qs[i].detach(), hi)[0].sum().backward()
        per_item.append(hi.grad)
    assert torch.allclose(h.grad, torch.stack(per_item).sum(0), atol=1e-6)


def test_solver_names_and_overrides() -> None:
    problem, params, outputs, sample = qp()
    values = [torch.tensor(v) for v in sample(np.random.default_rng(3))]
    reference = CvxpyLayer(problem, params, outputs, solver="CLARABEL")(*values)[0]
    for name in ("scs", cp.SCS, "Clarabel", cp.CLARABEL):
        layer = CvxpyLayer(problem, params, outputs, solver=name, solver_args={"eps": 1e-9})
        assert torch.allclose(layer(*values)[0], reference, atol=1e-6)
    starved = CvxpyLayer(problem, params, outputs, solver="SCS", solver_args={"max_iters": 5})
    with pytest.raises(SolverError, match="iteration_limit"):
        starved(*values)
    precise = starved(*values, solver_args={"eps": 1e-9, "max_iters": 100_000})[0]
    assert torch.allclose(precise, reference, atol=1e-6)
    assert starved.solver_args == {"max_iters": 5}  # the override was for one call only
