"""LPGD's opt-in fallback: a side whose perturbed problem is unbounded is replaced by the other."""

from __future__ import annotations

import cvxpy as cp
import pytest
import torch

from cvxlpgd import LPGD, CvxpyLayer, PerturbedSolveError


def _ray_lp() -> tuple[cp.Problem, cp.Parameter, cp.Variable]:
    """min c'x s.t. x >= 0, x1 <= 1: bounded only while c0 >= 0 (x0 is free to grow)."""
    x, c = cp.Variable(2), cp.Parameter(2)
    return cp.Problem(cp.Minimize(c @ x), [x >= 0, x[1] <= 1]), c, x


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_fallback_uses_the_side_that_works(solver: str) -> None:
    problem, c, x = _ray_lp()
    # dx = (1, 0): the upper side solves with c - tau dx = (-9, .): unbounded; the lower side is fine.
    weight = torch.tensor([1.0, 0.0])
    layer = CvxpyLayer(problem, [c], [x], solver=solver, gradient=LPGD(tau=10.0))
    cost = torch.tensor([1.0, -1.0], requires_grad=True)
    with pytest.raises(PerturbedSolveError, match=r"item 0, upper \(-tau\) side: unbounded") as error:
        (layer(cost)[0] * weight).sum().backward()
    assert (error.value.side, error.value.tau, error.value.statuses) == ("upper", 10.0, {0: "unbounded"})

    cost.grad = None
    with pytest.warns(UserWarning, match="fell back to a one-sided estimate"):
        (layer(cost, gradient=LPGD(tau=10.0, fallback=True))[0] * weight).sum().backward()
    lower = cost.detach().clone().requires_grad_(True)
    (layer(lower, gradient=LPGD(tau=10.0, side="lower"))[0] * weight).sum().backward()
    assert torch.allclose(cost.grad, lower.grad, atol=1e-6)


def test_fallback_tries_the_unused_side() -> None:
    problem, c, x = _ray_lp()
    config = LPGD(tau=10.0, side="upper", fallback=True)
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL", gradient=config)
    cost = torch.tensor([1.0, -1.0], requires_grad=True)
    with pytest.warns(UserWarning, match="one-sided") as record:
        (layer(cost)[0] * torch.tensor([1.0, 0.0])).sum().backward()
    assert record[0].message.statuses == {(0, -1): "unbounded"}  # the upper side failed
    assert torch.isfinite(cost.grad).all()


def test_fallback_must_be_bool() -> None:
    with pytest.raises(TypeError, match="fallback"):
        LPGD(fallback="yes")
