"""An item's outputs and gradients do not depend on its batch neighbours, on how the batch is cut
into chunks, or on the machine's core count (which sets the default chunking): bitwise."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import LPGD, CvxpyLayer

BATCH = 6


def _qp():
    """A QP with parametrized costs and right-hand sides, its duals as an output; items of very
    different cost scales, so that a solver scaled by one item solves the others differently."""
    rng = np.random.default_rng(0)
    n, m = 8, 6
    G = rng.standard_normal((m, n))
    x, q, h = cp.Variable(n), cp.Parameter(n), cp.Parameter(m)
    con = G @ x <= h
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [con, x >= -1, x <= 1])
    scales = np.logspace(-2, 2, BATCH)[:, None]
    values = [rng.standard_normal((BATCH, n)) * scales, rng.uniform(0.1, 1.0, (BATCH, m))]
    return problem, [q, h], [x, con.dual_variables[0]], values


def _lp():
    rng = np.random.default_rng(1)
    n, m = 10, 5
    G = rng.uniform(0.2, 1.0, (m, n))
    x, c, h = cp.Variable(n), cp.Parameter(n), cp.Parameter(m)
    con = G @ x <= h
    problem = cp.Problem(cp.Minimize(c @ x), [con, x >= 0, x <= 1])
    scales = np.logspace(-2, 2, BATCH)[:, None]
    values = [-rng.uniform(0.5, 1.5, (BATCH, n)) * scales, rng.uniform(1.0, 3.0, (BATCH, m))]
    return problem, [c, h], [x, con.dual_variables[0]], values


def _run(layer: CvxpyLayer, values: list[np.ndarray], weights: list[np.ndarray]) -> list[np.ndarray]:
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    outputs = layer(*tensors)
    sum((o * torch.tensor(w)).sum() for o, w in zip(outputs, weights, strict=True)).backward()
    return [o.detach().numpy() for o in outputs] + [t.grad.numpy() for t in tensors]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("solver", ["CLARABEL", "SCS", "HIGHS"])
@pytest.mark.parametrize("make", [_qp, _lp], ids=["qp", "lp"])
@pytest.mark.parametrize("gradient", [LPGD(tau=1e-2, side="central"), "lpgd"], ids=["LPGD", "default"])
def test_items_do_not_depend_on_neighbours_or_chunking(solver, make, gradient) -> None:
    problem, params, variables, values = make()
    rng = np.random.default_rng(2)
    weights = [rng.standard_normal((BATCH, *v.shape)) for v in variables]

    def layer(chunks: int) -> CvxpyLayer:
        return CvxpyLayer(problem, params, variables, solver=solver, gradient=gradient, chunks=chunks)

    reference = _run(layer(1), values, weights)
    assert np.abs(reference[-2]).max() > 1e-3  # a gradient is there to compare
    for chunks in (2, 3):
        for got, want in zip(_run(layer(chunks), values, weights), reference, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"chunks={chunks}")
    alone = layer(1)
    for i in (BATCH - 1, 2):
        item = _run(alone, [v[i : i + 1] for v in values], [w[i : i + 1] for w in weights])
        for got, want in zip(item, reference, strict=True):
            np.testing.assert_array_equal(got[0], want[i], err_msg=f"item {i} alone")
