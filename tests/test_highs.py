"""The HiGHS backend: LP layers against CVXPY's own HiGHS and Clarabel, LPGD against Clarabel's
and against the formula from direct solves, warm re-solves, mixed-integer layers and their errors."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import cvxpy as cp
import numpy as np
import pytest
import torch
from problems import cvxpy_solution, mixed_milp, own_basis_re_solves, random_lp, rhs_lp

from cvxlpgd import LPGD, CvxpyLayer
from cvxlpgd.compile import compile_problem
from cvxlpgd.errors import SolverError
from cvxlpgd.examples import grid_shortest_path, shortest_path_data
from cvxlpgd.program import ConicForm
from cvxlpgd.solvers.highs import HighsSolver

T = TypeVar("T")


@pytest.mark.timeout(120)
def test_lp_layer_equals_cvxpy_highs_and_clarabel() -> None:
    """x and the duals of every constraint, the bound rows HiGHS takes as column bounds included."""
    problem, params, x, cons, values = rhs_lp(seed=1)
    cons = cons[:2]  # an inequality and a bound row
    duals = [con.dual_variables[0] for con in cons]
    layer = CvxpyLayer(problem, params, [x, *duals], solver="HIGHS")
    got = [t.numpy() for t in layer(*[torch.tensor(v) for v in values])]
    assert layer.last_statuses == ["optimal"]
    for solver in (cp.HIGHS, cp.CLARABEL):
        expected = cvxpy_solution(
            problem, params, values, solver, [x, *[con.dual_variables[0] for con in cons]]
        )
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-6)
    assert np.abs(got[1]).max() > 1e-3 and np.abs(got[2]).max() > 1e-3  # both dual kinds are active


@pytest.mark.timeout(120)
def test_tied_bound_rows_share_their_column_dual_as_clarabel_does() -> None:
    """Two rows bound x from below (x >= 0 and 2x >= 0) and one loose one (x >= -1): HiGHS sees one
    column bound, and its dual is split between the two rows that attain it as on Clarabel's
    central path (y_1 s_1 = y_2 s_2 with s_2 = 2 s_1: the scaled row takes half as much)."""
    x, c = cp.Variable(3, name="x"), cp.Parameter(3, name="c")
    cons = [x >= 0, 2 * x >= 0, x >= -1, x <= 1, cp.sum(x) == 1.5]
    problem = cp.Problem(cp.Minimize(c @ x), cons)
    value = np.array([1.0, -0.5, 2.0])  # x = (0.5, 1, 0): x_2 at its lower bound with reduced cost 1
    duals = [con.dual_variables[0] for con in cons]
    layer = CvxpyLayer(problem, [c], [x, *duals], solver="HIGHS")
    got = [t.numpy() for t in layer(torch.tensor(value))]
    np.testing.assert_allclose(got[1], [0.0, 0.0, 0.5], atol=1e-12)  # y_1 + 2 y_2 = 1, y_1 = 2 y_2
    np.testing.assert_allclose(got[2], [0.0, 0.0, 0.25], atol=1e-12)
    expected = cvxpy_solution(problem, [c], [value], cp.CLARABEL, [x, *duals])
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        # An interior point reaches the split of tied rows only in the limit (off by 1.5e-4 here).
        np.testing.assert_allclose(g, e, atol=1e-3 if i in (1, 2) else 1e-6)


@pytest.mark.timeout(120)
def test_dense_lp_and_shortest_path_batches_equal_cvxpy() -> None:
    """A batch on the default thread pool: every item equals CVXPY's HiGHS solve."""
    problem, c, x, con, c_value = random_lp(50, 20, seed=3)
    costs = c_value * np.random.default_rng(1).uniform(0.5, 1.5, (6, c_value.size))
    layer = CvxpyLayer(problem, [c], [x, con.dual_variables[0]], solver="HIGHS")
    xs, ys = layer(torch.tensor(costs))
    for i, cost in enumerate(costs):
        x_ref, y_ref = cvxpy_solution(problem, [c], [cost], cp.CLARABEL, [x, con.dual_variables[0]])
        np.testing.assert_allclose(xs[i].numpy(), x_ref, atol=1e-6)
        np.testing.assert_allclose(ys[i].numpy(), y_ref, atol=1e-6)

    path = grid_shortest_path(5)
    _, costs = shortest_path_data(6, path.cost.size, seed=2)
    (flows,) = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="HIGHS")(torch.tensor(costs))
    for i, cost in enumerate(costs):
        (ref,) = cvxpy_solution(path.problem, [path.cost], [cost], cp.HIGHS, [path.flow])
        np.testing.assert_allclose(flows[i].numpy(), ref, atol=1e-9)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("side", ["lower", "central"])
@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_lpgd_with_highs_equals_lpgd_with_clarabel(side: str, rho: float) -> None:
    """Same tau, same estimator: the re-solves (a QP when rho > 0) have unique optima, so both
    solvers must give the same gradient for costs and right-hand sides (dual outputs perturb b)."""
    problem, params, x, cons, values = rhs_lp(seed=3)
    outputs = [x, cons[0].dual_variables[0]]
    weights = [torch.tensor(np.random.default_rng(5).standard_normal(8)), torch.ones(5)]
    grads = {}
    for solver in ("HIGHS", "CLARABEL"):
        layer = CvxpyLayer(
            problem,
            params,
            outputs,
            solver=solver,
            gradient=LPGD(tau=0.05, rho=rho, side=side),
            solver_args={"eps": 1e-10},
        )
        tensors = [torch.tensor(v, requires_grad=True) for v in values]
        out = layer(*tensors)
        sum((o * w).sum() for o, w in zip(out, weights, strict=True)).backward()
        grads[solver] = [t.grad.numpy() for t in tensors]
    for g_highs, g_clarabel in zip(grads["HIGHS"], grads["CLARABEL"], strict=True):
        assert np.abs(g_clarabel).max() > 1e-2  # a gradient that is not identically zero
        np.testing.assert_allclose(g_highs, g_clarabel, atol=1e-5)


@pytest.mark.timeout(120)
def test_lpgd_resolve_from_own_basis_takes_fewer_pivots() -> None:
    """The re-solve starts from the forward's basis of the same item: far fewer simplex
    iterations than the same perturbed program solved cold (measured: 165 against 350 for the
    four items; 90 against 409 when the forward started from the previous item's basis and cold
    solves ran HiGHS's presolve)."""
    moved, warm_iterations, cold_iterations = own_basis_re_solves(HighsSolver({}))
    assert sum(moved) >= 2, moved  # the perturbations moved vertices: the re-solves had work to do
    assert sum(warm_iterations) * 2 < sum(cold_iterations), (warm_iterations, cold_iterations)


@pytest.mark.timeout(120)
def test_milp_layer_equals_cvxpy_highs() -> None:
    problem, params, variables, values = mixed_milp()
    layer = CvxpyLayer(problem, params, variables, solver="HIGHS", gradient=LPGD(tau=1.0, side="lower"))
    got = [t.numpy() for t in layer(*[torch.tensor(v) for v in values])]
    expected = cvxpy_solution(problem, params, values, cp.HIGHS, variables)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-7)
    assert np.allclose(got[0], np.round(got[0])) and got[0].max() > 0.5  # integral, not all zero
    assert got[3] == pytest.approx(2.5)  # the column bound CVXPY moved out of A is honoured


@pytest.mark.timeout(120)
@pytest.mark.parametrize("users_solve_first", [True, False])
def test_layer_and_the_users_own_highs_solves_share_a_thread(users_solve_first: bool) -> None:
    """HiGHS sizes a per-thread task scheduler at the first run on a thread, and a run asking for
    another size fails ("Not Set"). Both orders on one of the user's threads (a batch of one runs
    on the calling thread): ``problem.solve(solver=cp.HIGHS, threads=2)`` (say, the true optima
    for a regret) then the layer made every layer solve fail; the layer then the user's solve
    made the user's fail, while the layer asked HiGHS for one thread."""
    problem, params, variables, values = mixed_milp()

    def users_solve() -> list[np.ndarray]:
        for p, v in zip(params, values, strict=True):
            p.value = v
        problem.solve(solver=cp.HIGHS, threads=2)
        return [np.asarray(v.value) for v in variables]

    def layer_solve() -> tuple[list[np.ndarray], list[str]]:
        layer = CvxpyLayer(problem, params, variables, solver="HIGHS", gradient=LPGD(tau=1.0, side="lower"))
        return [t.numpy() for t in layer(*[torch.tensor(v) for v in values])], layer.last_statuses

    def both_on_one_thread() -> tuple[list[np.ndarray], tuple[list[np.ndarray], list[str]]]:
        if users_solve_first:
            expected = users_solve()
            return expected, layer_solve()
        got = layer_solve()
        return users_solve(), got

    expected, (got, statuses) = _on_a_fresh_thread(both_on_one_thread)
    assert statuses == ["optimal"]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-7)


@pytest.mark.timeout(120)
def test_milp_results_do_not_depend_on_the_executor_or_thread() -> None:
    """A branch and bound depends on HiGHS's thread count (on this knapsack batch, 628 against
    857 simplex iterations for one item), so every run uses one thread: in the calling thread,
    on pool workers, in worker processes, and on a thread where the user ran HiGHS with two."""
    loky = pytest.importorskip("loky")
    rng = np.random.default_rng(0)
    n = 30
    weights = rng.uniform(1.0, 5.0, (3, n))
    value, pick = cp.Parameter(n), cp.Variable(n, boolean=True)
    problem = cp.Problem(cp.Maximize(value @ pick), [weights @ pick <= weights.sum(axis=1) / 3])
    values = torch.tensor(rng.uniform(0.5, 2.0, (8, n)))

    def solve(executor=None) -> np.ndarray:
        layer = CvxpyLayer(problem, [value], [pick], solver="HIGHS", executor=executor)
        return layer(values)[0].numpy()

    reference = solve()
    with ThreadPoolExecutor(2) as pool:
        np.testing.assert_array_equal(solve(pool), reference)
    np.testing.assert_array_equal(solve(loky.get_reusable_executor(max_workers=2)), reference)

    def after_users_solve() -> np.ndarray:
        value.value = values[0].numpy()
        problem.solve(solver=cp.HIGHS, threads=2)
        return solve()

    np.testing.assert_array_equal(_on_a_fresh_thread(after_users_solve), reference)


def _on_a_fresh_thread(work: Callable[[], T]) -> T:
    """``work()`` on a new thread, as a user's own thread would run it; its exceptions propagate."""
    with ThreadPoolExecutor(1) as fresh:
        return fresh.submit(work).result()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("side", ["lower", "upper", "central"])
def test_lpgd_on_milp_equals_formula_from_direct_solves(side: str) -> None:
    """For a parameter in the linear cost, LPGD's gradient is (x(c + s tau dx) - ...) / tau: built
    here from CVXPY's own HiGHS solves at the perturbed costs (dL/dc = x)."""
    problem, params, variables, values = mixed_milp()
    tau = 0.8
    layer = CvxpyLayer(problem, params, variables[:2], solver="HIGHS", gradient=LPGD(tau=tau, side=side))
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    count, pick = layer(*tensors)
    rng = np.random.default_rng(11)
    w_count, w_pick = rng.standard_normal(6), rng.standard_normal(3)
    ((count * torch.tensor(w_count)).sum() + (pick * torch.tensor(w_pick)).sum()).backward()

    # The objective has -value @ count: the cost of `count` is -value, so dx on it enters with -1.
    def solve(sign: int) -> tuple[np.ndarray, np.ndarray]:
        shifted = [values[0] - sign * tau * w_count, values[1] - sign * tau * w_pick]
        return tuple(cvxpy_solution(problem, params, shifted, cp.HIGHS, variables[:2]))

    star, plus, minus = solve(0), solve(1), solve(-1)
    low, high = {"lower": (star, plus), "upper": (minus, star), "central": (minus, plus)}[side]
    span = tau * (2 if side == "central" else 1)
    # d loss / d value = -(d loss / d cost of count), and G(z) for c is x.
    expected = [-(high[0] - low[0]) / span, -(high[1] - low[1]) / span]
    np.testing.assert_allclose(tensors[0].grad.numpy(), expected[0], atol=1e-9)
    np.testing.assert_allclose(tensors[1].grad.numpy(), expected[1], atol=1e-9)
    assert np.abs(expected[0]).max() + np.abs(expected[1]).max() > 0.1  # the vertex did move


@pytest.mark.timeout(120)
def test_milp_stopped_with_incumbent_is_inaccurate_without_it_fails() -> None:
    problem, params, variables, values = mixed_milp()
    tensors = [torch.tensor(v) for v in values]
    # Stop at the first improving solution: usable, with a warning.
    first = CvxpyLayer(problem, params, variables, solver="HIGHS", solver_args={"mip_max_improving_sols": 1})
    with pytest.warns(UserWarning, match="inaccurately"):
        first(*tensors)
    assert first.last_statuses == ["optimal_inaccurate"]
    # No time at all: no incumbent, a failure naming the status.
    none = CvxpyLayer(problem, params, variables, solver="HIGHS", solver_args={"time_limit": 0.0})
    with pytest.raises(SolverError, match="iteration_limit"):
        none(*tensors)


@pytest.mark.timeout(60)
def test_lp_iteration_limit_is_a_failure() -> None:
    problem, c, x, _, c_value = random_lp(30, 10, seed=2)
    layer = CvxpyLayer(problem, [c], [x], solver="HIGHS", solver_args={"max_iters": 1, "presolve": "off"})
    with pytest.raises(SolverError, match="iteration_limit"):
        layer(torch.tensor(c_value))


def _small_mip():
    x = cp.Variable(3, integer=True, name="x")
    y = cp.Variable(2, name="y")
    c = cp.Parameter(3, name="c")
    h = cp.Parameter(name="h")
    return x, y, c, h


@pytest.mark.timeout(60)
def test_clear_errors() -> None:
    x, y, c, h = _small_mip()
    base = [x >= 0, x <= 2, y >= 0, cp.sum(x) + cp.sum(y) <= 4]
    mip = cp.Problem(cp.Minimize(c @ x + cp.sum(y)), base)
    with pytest.raises(ValueError, match="x.*CLARABEL solves convex problems only.*solver='HIGHS'"):
        CvxpyLayer(mip, [c], [x], solver="CLARABEL")
    with pytest.raises(ValueError, match="gradient='implicit'.*not 'HIGHS'"):
        CvxpyLayer(mip, [c], [x], solver="HIGHS", gradient="implicit")
    with pytest.raises(ValueError, match="dual variable.*not defined for mixed-integer"):
        CvxpyLayer(mip, [c], [base[3].dual_variables[0]], solver="HIGHS")
    in_constraint = cp.Problem(cp.Minimize(c @ x), [*base, x[0] <= h])
    with pytest.raises(ValueError, match=r"Constraint 4 .* depends on parameters \['h'\]"):
        CvxpyLayer(in_constraint, [c, h], [x], solver="HIGHS")
    nonlinear = cp.Problem(cp.Minimize(c @ x + cp.abs(y[0] - h)), base)
    with pytest.raises(ValueError, match="reaches its constraints.*nonlinear objective"):
        CvxpyLayer(nonlinear, [c, h], [x], solver="HIGHS")
    bounded = cp.Variable(integer=True, bounds=[0, h], name="bounded")
    with pytest.raises(ValueError, match="bounds of variable 'bounded'.*depend on parameters"):
        CvxpyLayer(cp.Problem(cp.Minimize(c @ x + bounded), base), [c, h], [x], solver="HIGHS")
    soc = cp.Problem(cp.Minimize(c[:2] @ y), [cp.norm(y) <= h])
    with pytest.raises(ValueError, match="second-order cones; use solver='SCS' or solver='CLARABEL'"):
        CvxpyLayer(soc, [c, h], [y], solver="HIGHS")
    with pytest.raises(ValueError, match="Unknown HIGHS setting 'tol'"):
        CvxpyLayer(mip, [c], [x], solver="HIGHS", solver_args={"tol": 1e-3})
    with pytest.raises(TypeError, match="'presolve' must be of type str"):
        CvxpyLayer(mip, [c], [x], solver="HIGHS", solver_args={"presolve": False})
    with pytest.raises(ValueError, match="HIGHS rejected the setting presolve='sometimes'"):
        CvxpyLayer(mip, [c], [x], solver="HIGHS", solver_args={"presolve": "sometimes"})


def _lp_with_costs(seed: int) -> tuple[cp.Problem, cp.Parameter, cp.Variable, np.ndarray]:
    """A random dense LP ``min c'x, Ax <= b, 0 <= x <= 1`` and 60 random cost vectors."""
    rng = np.random.default_rng(seed)
    n, m = rng.integers(5, 60), rng.integers(3, 40)
    A = rng.standard_normal((m, n))
    b = A @ rng.uniform(0, 1, n) + rng.uniform(0, 1, m)
    x, c = cp.Variable(n), cp.Parameter(n)
    return cp.Problem(cp.Minimize(c @ x), [A @ x <= b, x >= 0, x <= 1]), c, x, rng.standard_normal((60, n))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("seed", "before", "item"), [(29, 23, 0), (53, 5, 7)])
def test_an_item_after_another_is_solved_as_alone(seed: int, before: int, item: int) -> None:
    """Two pairs of items (found among 18,000 on random LPs) where HiGHS, started from the
    previous item's basis, stopped with model status "Unknown": the second item of the batch
    failed though CVXPY's HiGHS and the item alone solve it. It must give its own solution."""
    problem, c, x, costs = _lp_with_costs(seed)
    layer = CvxpyLayer(problem, [c], [x], solver="HIGHS", chunks=1)
    (pair,) = layer(torch.tensor(costs[[before, item]]))
    (alone,) = layer(torch.tensor(costs[[item]]))
    np.testing.assert_array_equal(pair.numpy()[1], alone.numpy()[0])
    c.value = costs[item]
    problem.solve(solver=cp.HIGHS)
    assert costs[item] @ pair.numpy()[1] == pytest.approx(problem.value, abs=1e-9)


@pytest.mark.timeout(120)
def test_a_warm_start_that_ends_without_an_optimum_is_run_again_cold() -> None:
    """Given another item's final basis as warm start (as an LPGD re-solve gets its forward's),
    HiGHS stops with "Unknown" on this pair; the backend runs the item again cold and returns
    its optimum, counting both runs' pivots."""
    problem, c, x, costs = _lp_with_costs(29)
    compiled = compile_problem(problem, [c], [x], ConicForm("CLARABEL", quad_obj=True))
    batch = compiled.maps.apply(costs[[23, 0]])
    solver, workspace = HighsSolver({}), {}
    start = solver.solve(batch.item(0), workspace=workspace)
    warm = solver.solve(batch.item(1), warm_start=start, workspace=workspace)
    cold = HighsSolver({}).solve(batch.item(1))
    assert warm.status == "optimal", warm.solver_status
    np.testing.assert_allclose(warm.x, cold.x, atol=1e-9)
    assert warm.iterations > cold.iterations
