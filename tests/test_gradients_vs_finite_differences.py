"""Gradients: LPGD against finite differences and against its formula on direct solves, implicit
against gradcheck, and the LP case where the implicit gradient vanishes but LPGD's does not."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from lpgd_formula import lpgd_formula_gradient
from problems import active_set_qp, finite_difference, random_lp

from cvxlpgd import LPGD, CvxpyLayer

TIGHT = {"SCS": {"eps": 1e-11, "max_iters": 200_000}, "CLARABEL": {"eps": 1e-12}}
# diffcp takes no P, so quadratics reach it as second-order cones; on those, Clarabel's solution
# is accurate to only ~1e-6 in x even at eps=1e-10 ("AlmostSolved" at 1e-12), which turns
# gradcheck's 1e-6 finite differences into noise. SCS reaches 1e-10 and gets gradcheck; Clarabel's
# implicit gradient is checked against SCS's.
IMPLICIT_TIGHT = {"SCS": TIGHT["SCS"], "CLARABEL": {"eps": 1e-10}}


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
@pytest.mark.parametrize("side", ["central", "lower", "upper"])
def test_lpgd_matches_finite_differences_on_qp(solver: str, side: str) -> None:
    """rho = 0, small tau: LPGD is the true derivative for c, A, b and P (via a PSD parameter Q)."""
    qp = active_set_qp(n=5, m=6, n_active=3, seed=1)
    outputs = [qp.x, qp.constraint.dual_variables[0]]
    tau = 1e-5 if side == "central" else 1e-6
    layer = CvxpyLayer(
        qp.problem,
        qp.params,
        outputs,
        solver=solver,
        gradient=LPGD(tau=tau, side=side),
        solver_args=TIGHT[solver],
    )
    reference = CvxpyLayer(qp.problem, qp.params, outputs, solver="CLARABEL", solver_args=TIGHT["CLARABEL"])
    rng = np.random.default_rng(0)
    w, v = rng.standard_normal(5), rng.standard_normal(6)

    def loss(values: list[np.ndarray]) -> float:
        with torch.no_grad():
            x, y = reference(*[torch.tensor(a) for a in values])
        return float(w @ x.numpy() + v @ y.numpy())

    tensors = [torch.tensor(a, requires_grad=True) for a in qp.values]
    x, y = layer(*tensors)
    (x @ torch.tensor(w) + y @ torch.tensor(v)).backward()
    for index, (param, tensor) in enumerate(zip(qp.params, tensors, strict=True)):
        fd = finite_difference(loss, qp.values, index, symmetric=param.attributes["PSD"])
        error = np.linalg.norm(tensor.grad.numpy() - fd) / np.linalg.norm(fd)
        assert error <= 1e-4, f"{solver} {side}: relative error {error:.2e} for {param.name()}"


@pytest.mark.parametrize("kind", ["lp", "qp"])
@pytest.mark.parametrize("rho", [0.0, 0.3])
@pytest.mark.parametrize("side", ["central", "lower", "upper"])
def test_lpgd_equals_formula_on_direct_solves(kind: str, rho: float, side: str) -> None:
    """tau = 0.5: the layer's gradient equals the formula evaluated on two direct Clarabel solves."""
    tau = 0.5
    if kind == "lp":
        problem, c, x, con, c_value = random_lp(n=6, m=3, seed=3)
        params, values, outputs = [c], [c_value], [x]
    else:
        qp = active_set_qp(n=4, m=5, n_active=2, seed=4)
        params, values, outputs = qp.params, qp.values, [qp.x, qp.constraint.dual_variables[0]]
        problem = qp.problem
    layer = CvxpyLayer(
        problem,
        params,
        outputs,
        solver="CLARABEL",
        gradient=LPGD(tau=tau, rho=rho, side=side),
        solver_args=TIGHT["CLARABEL"],
    )
    rng = np.random.default_rng(7)
    out_grads = [rng.standard_normal(o.shape) for o in outputs]
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    results = layer(*tensors)
    sum((r * torch.tensor(g)).sum() for r, g in zip(results, out_grads, strict=True)).backward()

    expected = np.concatenate(
        [g.ravel() for g in lpgd_formula_gradient(layer, values, out_grads, layer.gradient)]
    )
    got = np.concatenate([t.grad.numpy().ravel() for t in tensors])
    assert np.abs(got - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max())
    assert np.abs(expected).max() > 1e-3  # the comparison is not between zeros


def _least_squares() -> tuple[cp.Problem, list[cp.Parameter], list[cp.Variable], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    x = cp.Variable(4)
    A, b = cp.Parameter((8, 4)), cp.Parameter(8)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b)))
    return problem, [A, b], [x], [rng.standard_normal((8, 4)), rng.standard_normal(8)]


def _qp() -> tuple[cp.Problem, list[cp.Parameter], list[cp.Variable], list[np.ndarray]]:
    qp = active_set_qp(n=4, m=5, n_active=2, seed=2, quad_param=False)
    return qp.problem, qp.params, [qp.x, qp.constraint.dual_variables[0]], qp.values


def _socp() -> tuple[cp.Problem, list[cp.Parameter], list[cp.Variable], list[np.ndarray]]:
    rng = np.random.default_rng(1)
    x = cp.Variable(3)
    F, g = cp.Parameter((5, 3)), cp.Parameter(5)
    problem = cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2) + 0.1 * cp.sum_squares(x)), [cp.norm(x, 2) <= 0.5])
    return problem, [F, g], [x], [rng.standard_normal((5, 3)), rng.standard_normal(5)]


SMOOTH_PROBLEMS = {"least_squares": _least_squares, "qp": _qp, "socp": _socp}


@pytest.mark.parametrize("name", sorted(SMOOTH_PROBLEMS))
def test_implicit_passes_gradcheck(name: str) -> None:
    problem, params, outputs, values = SMOOTH_PROBLEMS[name]()
    layer = CvxpyLayer(
        problem, params, outputs, solver="SCS", gradient="implicit", solver_args=IMPLICIT_TIGHT["SCS"]
    )
    tensors = tuple(torch.tensor(v, requires_grad=True) for v in values)
    assert torch.autograd.gradcheck(lambda *p: layer(*p), tensors, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SMOOTH_PROBLEMS))
def test_implicit_clarabel_agrees_with_scs(name: str) -> None:
    problem, params, outputs, values = SMOOTH_PROBLEMS[name]()
    weights = [np.random.default_rng(3).standard_normal(o.shape) for o in outputs]
    grads = {}
    for solver in ("SCS", "CLARABEL"):
        layer = CvxpyLayer(
            problem, params, outputs, solver=solver, gradient="implicit", solver_args=IMPLICIT_TIGHT[solver]
        )
        tensors = [torch.tensor(v, requires_grad=True) for v in values]
        results = layer(*tensors)
        sum((r * torch.tensor(w)).sum() for r, w in zip(results, weights, strict=True)).backward()
        grads[solver] = np.concatenate([t.grad.numpy().ravel() for t in tensors])
    error = np.linalg.norm(grads["CLARABEL"] - grads["SCS"]) / np.linalg.norm(grads["SCS"])
    assert error < 1e-4


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_lp_implicit_gradient_vanishes_lpgd_descends(solver: str) -> None:
    """On an LP the solution is piecewise constant in c: the implicit gradient is 0, LPGD's is
    not, and a step along -LPGD lowers the decision loss."""
    problem, c, x, _, c_value = random_lp(n=8, m=3, seed=5)
    layer = CvxpyLayer(problem, [c], [x], solver=solver, solver_args={"eps": 1e-9})
    with torch.no_grad():
        x_star = layer(torch.tensor(c_value))[0].numpy()
    target = torch.tensor(1.0 - np.round(x_star))  # another vertex of the box

    def decision_loss(cost: torch.Tensor, gradient) -> tuple[torch.Tensor, torch.Tensor]:
        cost = cost.clone().requires_grad_(True)
        loss = ((layer(cost, gradient=gradient)[0] - target) ** 2).sum()
        loss.backward()
        return loss.detach(), cost.grad

    cost = torch.tensor(c_value)
    _, implicit = decision_loss(cost, "implicit")
    assert implicit.abs().max() < 1e-6
    loss, lpgd = decision_loss(cost, LPGD(tau=1.0))
    assert lpgd.abs().max() > 1e-2
    new_loss, _ = decision_loss(cost - 1.0 * lpgd, LPGD(tau=1.0))
    assert new_loss < loss - 1e-3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("side", ["central", "lower"])
def test_small_tau_lpgd_is_accurate_at_default_scs_tolerance(side: str) -> None:
    """tau = 1e-4 moves sparsemax's x by about 1e-4, near SCS's tolerance (eps 1e-6): the warm
    re-solves (and, one-sided, the forward point) must be solved tighter than that, or the
    gradient is off by ~1e-2. Checked against central differences of a tight Clarabel solve."""
    n = 20
    x, y = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    rng = np.random.default_rng(0)
    values, w = [rng.standard_normal((8, n))], rng.standard_normal((8, n))
    layer = CvxpyLayer(
        problem, [y], [x], solver="SCS", gradient=LPGD(tau=1e-4, side=side), solver_args={"eps": 1e-6}
    )
    reference = CvxpyLayer(problem, [y], [x], solver="CLARABEL", solver_args=TIGHT["CLARABEL"])

    def loss(vals: list[np.ndarray]) -> float:
        with torch.no_grad():
            (out,) = reference(torch.tensor(vals[0]))
        return float((w * out.numpy()).sum())

    fd = finite_difference(loss, values, 0, symmetric=False)
    tensor = torch.tensor(values[0], requires_grad=True)
    (out,) = layer(tensor)
    (out * torch.tensor(w)).sum().backward()
    error = np.linalg.norm(tensor.grad.numpy() - fd) / np.linalg.norm(fd)
    assert error <= 1e-3, f"{side}: relative error {error:.2e}"


@pytest.mark.timeout(60)
def test_perturbation_below_solver_accuracy_warns() -> None:
    """tau * |dx| = 1e-12 needs a re-solve tolerance of 1e-16, beyond SCS: say so, naming tau."""
    n = 5
    x, y = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    layer = CvxpyLayer(problem, [y], [x], solver="SCS", gradient=LPGD(tau=1e-12))
    tensor = torch.tensor(np.linspace(0.0, 0.4, n), requires_grad=True)
    with pytest.warns(UserWarning, match=r"tau=1e-12.*too small .*item 0"):
        layer(tensor)[0].sum().backward()
    large = torch.tensor(np.linspace(0.0, 0.4, n), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no such warning at the default tau
        layer(large, gradient=LPGD())[0].sum().backward()
