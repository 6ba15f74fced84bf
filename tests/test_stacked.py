"""Stacked HiGHS solves (``HighsSolver.solve_many``): small LPs of one structure solved as one
block-diagonal model, each item's values recomputed from its own block of the basis. An item's
results must equal its per-item solve and CVXPY's, and must not depend on its batch neighbours,
the group it was stacked with, or the chunking (bitwise where its optimal basis is unique)."""

from __future__ import annotations

import dataclasses
import warnings
from concurrent.futures import Executor, ThreadPoolExecutor

import cvxpy as cp
import numpy as np
import pytest
import torch
from problems import cvxpy_solution, rhs_lp

from cvxlpgd import CvxpyLayer, SolverError
from cvxlpgd.compile import compile_problem
from cvxlpgd.cone import Integrality
from cvxlpgd.examples import grid_shortest_path, shortest_path_data
from cvxlpgd.program import ConicForm
from cvxlpgd.solvers import highs, highs_vertex
from cvxlpgd.solvers.highs import HighsSolver, stack_size

BATCH = 10


def _rhs_values(batch: int, seed: int) -> list[np.ndarray]:
    """Costs and right-hand sides for ``rhs_lp``: random LPs whose optimum (x and y) is unique."""
    rng = np.random.default_rng(seed)
    _, _, _, _, (c, h) = rhs_lp(0)
    return [c * rng.uniform(0.5, 1.5, (batch, c.size)), h * rng.uniform(0.8, 1.2, (batch, h.size))]


def _programs(problem, params, variables, values):
    compiled = compile_problem(problem, params, variables, ConicForm("CLARABEL", quad_obj=True))
    theta = np.hstack([v.reshape(v.shape[0], -1) for v in values])
    batch = compiled.maps.apply(theta)
    return [batch.item(i) for i in range(batch.batch_size)]


def _per_item_highs() -> HighsSolver:
    solver = HighsSolver({})
    solver.solves_many = False
    return solver


def _run(layer: CvxpyLayer, values: list[np.ndarray], weights: list[np.ndarray]) -> list[np.ndarray]:
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    outputs = layer(*tensors)
    sum((o * torch.tensor(w)).sum() for o, w in zip(outputs, weights, strict=True)).backward()
    return [o.detach().numpy() for o in outputs] + [t.grad.numpy() for t in tensors]


def _rhs_case():
    problem, params, x, constraints, _ = rhs_lp(0)
    return problem, params, [x, constraints[0].dual_variables[0]], _rhs_values(BATCH, seed=1)


def _path_case():
    path = grid_shortest_path(5)
    return path.problem, [path.cost], [path.flow], [shortest_path_data(BATCH, path.cost.size, seed=4)[1]]


@pytest.mark.timeout(120)
def test_solve_many_equals_solve_and_cvxpy() -> None:
    problem, params, x, constraints, _ = rhs_lp(0)
    values = _rhs_values(12, seed=0)
    programs = _programs(problem, params, [x], values)
    assert stack_size(programs[0]) > 1  # the case this test is about
    solver = HighsSolver({})
    stacked = solver.solve_many(programs, [None] * len(programs), {})
    for i, (program, got) in enumerate(zip(programs, stacked, strict=True)):
        alone = solver.solve(program)
        assert got.status == alone.status == "optimal"
        for field in ("x", "y", "s"):
            np.testing.assert_allclose(getattr(got, field), getattr(alone, field), atol=1e-9, rtol=0)
        want = cvxpy_solution(problem, params, [v[i] for v in values], "HIGHS", [x])[0]
        np.testing.assert_allclose(got.x, want, atol=1e-7)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("make", [_rhs_case, _path_case], ids=["random-lp", "shortest-path"])
def test_items_do_not_depend_on_their_group_or_chunking(make) -> None:
    """Forward and default backward: an item alone, in chunks of other sizes and in a batch in
    another order gives the same bits; per-item HiGHS and CVXPY agree to 1e-9 / 1e-6."""
    problem, params, variables, values = make()
    weights = [np.random.default_rng(2).standard_normal((BATCH, *v.shape)) for v in variables]

    def layer(chunks: int, solver: object = "HIGHS", executor: Executor | None = None) -> CvxpyLayer:
        return CvxpyLayer(problem, params, variables, solver=solver, chunks=chunks, executor=executor)

    reference = _run(layer(1), values, weights)
    assert np.abs(reference[-1]).max() > 1e-3  # a gradient is there to compare
    for chunks in (2, 3):
        for got, want in zip(_run(layer(chunks), values, weights), reference, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"chunks={chunks}")
    with ThreadPoolExecutor(3) as pool:
        for got, want in zip(_run(layer(4, executor=pool), values, weights), reference, strict=True):
            np.testing.assert_array_equal(got, want, err_msg="3 threads, 4 chunks")
    order = np.arange(BATCH)[::-1]
    reordered = _run(layer(1), [v[order] for v in values], [w[order] for w in weights])
    for got, want in zip(reordered, reference, strict=True):
        np.testing.assert_array_equal(got, want[order], err_msg="another order")
    for i in (0, BATCH - 3):
        alone = _run(layer(1), [v[i : i + 1] for v in values], [w[i : i + 1] for w in weights])
        for got, want in zip(alone, reference, strict=True):
            np.testing.assert_array_equal(got[0], want[i], err_msg=f"item {i} alone")
    for got, want in zip(_run(layer(1, _per_item_highs()), values, weights), reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-9, rtol=0, err_msg="per-item HiGHS")
    for i in (0, BATCH - 1):
        want = cvxpy_solution(problem, params, [v[i] for v in values], "HIGHS", variables[:1])[0]
        np.testing.assert_allclose(reference[0][i], want, atol=1e-6, err_msg=f"CVXPY, item {i}")


@pytest.mark.timeout(300)
def test_tied_optima_do_not_depend_on_the_batch(monkeypatch) -> None:
    """Integer costs in {1, 2} on the 5 x 5 path: many items have several shortest paths, and a
    stacked run could end on any of them depending on the neighbours. Such items are found (a
    movable nonbasic variable with a zero reduced cost) and solved alone, so forward and default
    backward give the bits of the item alone and of the batch in another order; each flow is a
    shortest path (its cost equals CVXPY's optimal value)."""
    path = grid_shortest_path(5)
    batch = 24
    costs = np.random.default_rng(0).integers(1, 3, (batch, path.cost.size)).astype(float)
    weights = [np.random.default_rng(1).standard_normal((batch, path.flow.size))]
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="HIGHS", chunks=1)
    found = []
    monkeypatch.setattr(highs, "tied", lambda *args: found.append(highs_vertex.tied(*args)) or found[-1])
    reference = _run(layer, [costs], weights)
    assert sum(int(t.sum()) for t in found) >= batch // 4  # the case this test is about
    order = np.arange(batch)[::-1]
    for got, want in zip(_run(layer, [costs[order]], [weights[0][order]]), reference, strict=True):
        np.testing.assert_array_equal(got, want[order], err_msg="another order")
    for i in range(batch):
        alone = _run(layer, [costs[i : i + 1]], [weights[0][i : i + 1]])
        for got, want in zip(alone, reference, strict=True):
            np.testing.assert_array_equal(got[0], want[i], err_msg=f"item {i} alone")
        path.cost.value = costs[i]
        optimum = path.problem.solve(solver=cp.HIGHS)
        assert abs(costs[i] @ reference[0][i] - optimum) <= 1e-9


@pytest.mark.timeout(120)
def test_groups_that_do_not_divide_the_batch(monkeypatch) -> None:
    """Groups of 3 for 7 items (3, 3 and a group of one, solved alone) give the bits of one
    group of 7, warm-started re-solves included."""
    problem, params, x, constraints, _ = rhs_lp(0)
    programs = _programs(problem, params, [x], _rhs_values(7, seed=5))
    solver = HighsSolver({})
    whole = solver.solve_many(programs, [None] * 7, {})
    monkeypatch.setattr(highs, "STACK_MAX_ITEMS", 3)
    assert stack_size(programs[0]) == 3
    cut = solver.solve_many(programs, [None] * 7, {})
    for a, b in zip(whole, cut, strict=True):
        for field in ("x", "y", "s"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    perturbed = _programs(problem, params, [x], _rhs_values(7, seed=6))
    warm_cut = solver.solve_many(perturbed, cut, {})
    monkeypatch.setattr(highs, "STACK_MAX_ITEMS", 32)
    warm_whole = solver.solve_many(perturbed, whole, {})
    for a, b in zip(warm_whole, warm_cut, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.timeout(120)
def test_warm_starts_from_each_items_own_basis() -> None:
    """Re-solves warm-started from each item's forward basis reach the cold re-solves' vertices
    in fewer pivots; the same programs from their own optimal bases take none."""
    problem, params, x, constraints, _ = rhs_lp(0)
    programs = _programs(problem, params, [x], _rhs_values(BATCH, seed=7))
    solver = HighsSolver({})
    workspace: dict = {}
    stars = solver.solve_many(programs, [None] * BATCH, workspace)
    again = solver.solve_many(programs, stars, workspace)
    assert [z.iterations for z in again] == [0] * BATCH
    perturbed = _programs(problem, params, [x], _rhs_values(BATCH, seed=8))
    warm = solver.solve_many(perturbed, stars, workspace)
    cold = solver.solve_many(perturbed, [None] * BATCH, {})
    for program, a, b in zip(perturbed, warm, cold, strict=True):
        np.testing.assert_allclose(a.x, b.x, atol=1e-9, rtol=0)
        # Perturbed right-hand sides can make the duals degenerate: both are optimal duals.
        np.testing.assert_allclose(program.b @ a.y, program.b @ b.y, atol=1e-9, rtol=0)
    assert warm[0].iterations < cold[0].iterations  # each a group's count (one group here)


@pytest.mark.timeout(120)
def test_an_infeasible_item_fails_alone() -> None:
    """One infeasible item among feasible ones: its status is infeasible, the others' results
    and the warnings and errors are those of per-item solves."""
    problem, params, x, constraints, _ = rhs_lp(0)
    values = _rhs_values(6, seed=9)
    values[1][1] = -100.0  # item 1: G >= 0 and x >= -1, so G x <= -100 has no solution
    outcomes = []
    for solver in ("HIGHS", _per_item_highs()):
        layer = CvxpyLayer(problem, params, [x], solver=solver, on_failure="nan")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (out,) = layer(*[torch.tensor(v) for v in values])
        outcomes.append((out.numpy(), layer.last_statuses, [str(w.message) for w in caught]))
        with pytest.raises(SolverError) as raised:
            CvxpyLayer(problem, params, [x], solver=solver)(*[torch.tensor(v) for v in values])
        outcomes[-1] += (str(raised.value),)
    (stacked, statuses, stacked_warnings, error), (per_item, per_item_statuses, *rest) = outcomes
    assert statuses == per_item_statuses == ["optimal", "infeasible"] + ["optimal"] * 4
    assert np.isnan(stacked[1]).all()
    np.testing.assert_allclose(np.delete(stacked, 1, 0), np.delete(per_item, 1, 0), atol=1e-9, rtol=0)
    assert stacked_warnings == rest[0] and stacked_warnings  # the layer warned, alike
    assert error == rest[1] and "item 1" in error


class _OwnHighs:
    """A user's backend without the batched entry: HiGHS one program at a time."""

    name = "own-highs"
    cones = frozenset({"zero", "nonneg"})
    reuses_workspace = True

    def __init__(self) -> None:
        self.inner, self.calls = HighsSolver({}), 0

    def solve(self, program, warm_start=None, workspace=None):
        self.calls += 1
        return self.inner.solve(program, warm_start=warm_start, workspace=workspace)


class _OwnBatchedHighs(_OwnHighs):
    """A user's backend with it."""

    solves_many = True

    def __init__(self) -> None:
        super().__init__()
        self.batched_calls: list[int] = []

    def solve_many(self, programs, warm_starts, workspace=None, eps=None):
        self.batched_calls.append(len(programs))
        return self.inner.solve_many(programs, warm_starts, workspace=workspace, eps=eps)


@pytest.mark.timeout(120)
def test_user_objects_with_and_without_the_batched_entry() -> None:
    problem, params, variables, values = _rhs_case()
    weights = [np.random.default_rng(3).standard_normal((BATCH, *v.shape)) for v in variables]
    reference = _run(CvxpyLayer(problem, params, variables, solver="HIGHS", chunks=1), values, weights)
    plain, batched = _OwnHighs(), _OwnBatchedHighs()
    for backend in (plain, batched):
        got = _run(CvxpyLayer(problem, params, variables, solver=backend, chunks=1), values, weights)
        for a, b in zip(got, reference, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-9, rtol=0)
    assert plain.calls >= 3 * BATCH  # the forward and both re-solves of each item, one by one
    # One call for the forward, one per side for the first re-solves; retries go one by one.
    assert batched.batched_calls == [BATCH] * 3


def test_only_small_lps_are_stacked() -> None:
    """MILPs (a stacked branch and bound couples the searches), QPs and LPs above the size limit
    are solved per item."""
    x, c = cp.Variable(4), cp.Parameter(4)
    lp = cp.Problem(cp.Minimize(c @ x), [x >= 0, x <= 1, cp.sum(x) == 2])
    qp = cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)), [x >= 0, x <= 1])
    theta = [np.ones((1, 4))]
    program = _programs(lp, [c], [x], theta)[0]
    assert stack_size(program) == highs.STACK_MAX_ITEMS
    integer = Integrality(np.arange(4), np.full(4, -np.inf), np.full(4, np.inf))
    assert stack_size(dataclasses.replace(program, integrality=integer)) == 0
    assert stack_size(_programs(qp, [c], [x], theta)[0]) == 0
    path = grid_shortest_path(12)
    big = _programs(path.problem, [path.cost], [path.flow], [shortest_path_data(1, path.cost.size, 0)[1]])[0]
    assert big.A.nnz > highs.STACK_NNZ_LIMIT and stack_size(big) == 0
