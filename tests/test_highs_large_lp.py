"""HiGHS on LPs with many dense rows (``many_dense_rows`` in cvxlpgd/solvers/highs.py): a cold
solve, and a re-solve from a basis optimal for costs ``FAR_COSTS`` away, run the interior point
method with crossover; a re-solve near the basis's costs continues the simplex from it. Checked
on LPs small enough for both routes, with the thresholds lowered: the same solutions, duals and
gradients as the simplex route's."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from problems import random_lp

from cvxlpgd import CvxpyLayer
from cvxlpgd.compile import compile_problem
from cvxlpgd.program import ConicForm
from cvxlpgd.solvers import highs
from cvxlpgd.solvers.highs import HighsSolver


def _interior_point_ran(workspace: dict) -> bool:
    """Whether HiGHS's last run in ``workspace`` took interior point iterations."""
    return workspace["highs"].highs.getInfoValue("ipm_iteration_count")[1] > 0


def _costs(value: np.ndarray) -> np.ndarray:
    """The costs, a change of relative size 1e-3 (near) and one of size 1 (far)."""
    direction = np.random.default_rng(7).standard_normal(value.size)
    direction *= np.linalg.norm(value) / np.linalg.norm(direction)
    return np.stack([value, value + 1e-3 * direction, value + direction])


def _every_row_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(highs, "DENSE_ROW_NONZEROS", 1)
    monkeypatch.setattr(highs, "DENSE_ROWS", 1)


def test_dense_rows_are_counted_as_measured() -> None:
    """The #75 LP's shape in small (624 dense rows x 2000 columns, where the interior point
    method won) against a banded sparse LP with more nonzeros (where the simplex won 5x)."""
    rng = np.random.default_rng(0)
    dense = sp.csc_array(np.vstack([rng.standard_normal((624, 2000)), np.eye(2000)]))
    assert highs.many_dense_rows(dense)
    assert not highs.many_dense_rows(dense[400:])  # 224 dense rows: the simplex
    n = 250_000
    rows = np.repeat(np.arange(2 * n), 3)
    columns = np.clip(rows // 2 + rng.integers(-10, 11, rows.size), 0, n - 1)
    banded = sp.csc_array((rng.standard_normal(rows.size), (rows, columns)), shape=(2 * n, n))
    assert banded.nnz > dense.nnz and not highs.many_dense_rows(banded)


@pytest.mark.timeout(120)
def test_route_follows_the_rows_and_the_distance_of_the_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    problem, c, x, _, value = random_lp(40, 12, seed=3)
    compiled = compile_problem(problem, [c], [x], ConicForm("HIGHS", quad_obj=False))
    batch = compiled.maps.apply(_costs(value))
    reference = [HighsSolver({"solver": "simplex"}).solve(batch.item(i)) for i in range(3)]
    workspace: dict = {}
    HighsSolver({}).solve(batch.item(0), workspace=workspace)
    assert not _interior_point_ran(workspace)  # no dense rows: the simplex
    _every_row_dense(monkeypatch)
    solver, workspace = HighsSolver({}), {}
    start = solver.solve(batch.item(0), workspace=workspace)
    assert _interior_point_ran(workspace)  # cold
    near = solver.solve(batch.item(1), warm_start=start, workspace=workspace)
    assert not _interior_point_ran(workspace)  # from the basis
    far = solver.solve(batch.item(2), warm_start=start, workspace=workspace)
    assert _interior_point_ran(workspace)
    for got, expected in zip((start, near, far), reference, strict=True):
        assert got.status == "optimal" and got.basis is not None  # crossover ends on a basis
        np.testing.assert_allclose(got.x, expected.x, atol=1e-9, rtol=0)
        np.testing.assert_allclose(got.y, expected.y, atol=1e-9, rtol=0)
    assert not np.allclose(far.x, start.x)  # the far costs move the vertex


@pytest.mark.timeout(120)
def test_layer_gradients_equal_the_simplex_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default gradient (its re-solves at relative steps 10, 0.5 and 1e-3 take both routes)."""
    problem, c, x, constraint, value = random_lp(40, 12, seed=4)
    costs = torch.tensor(_costs(value))
    weights = torch.tensor(np.random.default_rng(8).standard_normal((3, 40)))
    results = []
    for dense in (False, True):
        if dense:
            _every_row_dense(monkeypatch)
        layer = CvxpyLayer(problem, [c], [x, constraint.dual_variables[0]], solver="HIGHS")
        tensor = costs.clone().requires_grad_(True)
        outputs = layer(tensor)
        (outputs[0] * weights).sum().backward()
        results.append([o.detach().numpy() for o in outputs] + [tensor.grad.numpy()])
    assert np.abs(results[0][-1]).max() > 1e-3  # a gradient that could differ
    for ours, simplex in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(ours, simplex, atol=1e-9, rtol=0)
