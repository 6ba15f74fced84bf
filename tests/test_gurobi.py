"""The optional Gurobi backend: LP and MILP layers against HiGHS and CVXPY's own solves, duals
against Clarabel, LPGD against HiGHS, a reused model against fresh ones, failures, settings,
thread safety, and the message without gurobipy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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

pytest.importorskip("gurobipy")
from cvxlpgd.solvers.gurobi import GurobiLicenseError, GurobiSolver  # noqa: E402


def _knapsack(items: int = 32, dim: int = 2, capacity: float = 20.0, seed: int = 0):
    """PyEPO's 0/1 knapsack: maximize value'pick s.t. weights pick <= capacity, integer weights 3..8."""
    weights = np.random.default_rng(seed).integers(3, 9, (dim, items)).astype(float)
    value, pick = cp.Parameter(items, name="value"), cp.Variable(items, name="pick", boolean=True)
    problem = cp.Problem(cp.Maximize(value @ pick), [weights @ pick <= capacity])
    return problem, value, pick


@pytest.mark.timeout(60)
def test_lp_outputs_equal_highs_and_duals_equal_clarabel() -> None:
    """x equals HiGHS's vertex and the duals (bound rows included) satisfy the KKT conditions on a
    batch whose costs and right-hand sides vary (some items are primal degenerate, with many
    optimal duals); where the duals are unique, they equal Clarabel's."""
    problem, params, x, cons, values = rhs_lp(seed=1)
    rng = np.random.default_rng(2)
    batch = [v * rng.uniform(0.8, 1.2, (6, v.size)) for v in values]
    duals = [con.dual_variables[0] for con in cons]
    got = [
        t.numpy()
        for t in CvxpyLayer(problem, params, [x, *duals], solver="GUROBI")(*map(torch.tensor, batch))
    ]
    highs = CvxpyLayer(problem, params, [x], solver="HIGHS")(*map(torch.tensor, batch))[0].numpy()
    np.testing.assert_allclose(got[0], highs, atol=1e-9)
    G = cons[0].args[0].args[0].value  # G in G @ x <= h
    for i in range(6):
        c, h = batch[0][i], batch[1][i]
        x_i, y_G, y_low, y_up, y_sum = (g[i] for g in got)
        np.testing.assert_allclose(c + G.T @ y_G - y_low + y_up + y_sum, 0.0, atol=1e-9)  # stationarity
        assert min(y_G.min(), y_low.min(), y_up.min()) >= -1e-12
        np.testing.assert_allclose(c @ x_i, -(h @ y_G + y_low.sum() + 2 * y_up.sum() + y_sum), atol=1e-9)
    assert all(np.abs(d).max() > 1e-3 for d in got[1:3])  # inequality and bound duals are active
    unique = [
        t.numpy()
        for t in CvxpyLayer(problem, params, [x, *duals], solver="GUROBI")(*map(torch.tensor, values))
    ]
    for g, e in zip(unique, cvxpy_solution(problem, params, values, cp.CLARABEL, [x, *duals]), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-6)

    problem, c, x, con, c_value = random_lp(50, 20, seed=3)  # dense: unique duals
    costs = c_value * rng.uniform(0.5, 1.5, (6, c_value.size))
    xs, ys = CvxpyLayer(problem, [c], [x, con.dual_variables[0]], solver="GUROBI")(torch.tensor(costs))
    for i, cost in enumerate(costs):
        x_ref, y_ref = cvxpy_solution(problem, [c], [cost], cp.CLARABEL, [x, con.dual_variables[0]])
        np.testing.assert_allclose(xs[i].numpy(), x_ref, atol=1e-6)
        np.testing.assert_allclose(ys[i].numpy(), y_ref, atol=1e-6)


@pytest.mark.timeout(60)
def test_milps_equal_cvxpy_highs() -> None:
    problem, params, variables, values = mixed_milp()
    layer = CvxpyLayer(problem, params, variables, solver="GUROBI")
    got = [t.numpy() for t in layer(*map(torch.tensor, values))]
    for g, e in zip(got, cvxpy_solution(problem, params, values, cp.HIGHS, variables), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-7)
    assert got[3] == pytest.approx(2.5)  # the column bound CVXPY moved out of A is honoured

    problem, value, pick = _knapsack()
    values = np.random.default_rng(4).uniform(0.5, 2.0, (8, 32))
    layer = CvxpyLayer(problem, [value], [pick], solver="GUROBI")
    picks = layer(torch.tensor(values))[0].numpy()
    assert layer.last_statuses == ["optimal"] * 8
    for i, v in enumerate(values):
        (expected,) = cvxpy_solution(problem, [value], [v], cp.HIGHS, [pick])
        np.testing.assert_allclose(picks[i], expected, atol=1e-9)
        assert 3 <= picks[i].sum() <= 6  # a real selection (capacity 20, weights 3..8)


def _lpgd_grads(solver, gradient, problem, params, outputs, values, weights, **kwargs) -> list[np.ndarray]:
    layer = CvxpyLayer(problem, params, outputs, solver=solver, gradient=gradient, **kwargs)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    out = layer(*tensors)
    sum((o * w).sum() for o, w in zip(out, weights, strict=True)).backward()
    return [t.grad.numpy() for t in tensors]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("side", "rho"), [("lower", 0.0), ("central", 0.0), ("central", 0.5)])
def test_lpgd_gradients_equal_highs(side: str, rho: float) -> None:
    """Vertex solutions: both simplex solvers give the same gradient for costs and right-hand
    sides (the dual output perturbs b). With rho > 0 the re-solves are QPs with unique optima, on
    which HiGHS is off by 2.5e-6: the reference is Clarabel at eps = 1e-10 (Gurobi: 2e-8)."""
    problem, params, x, cons, values = rhs_lp(seed=3)
    outputs = [x, cons[0].dual_variables[0]]
    weights = [torch.tensor(np.random.default_rng(5).standard_normal(8)), torch.ones(5)]
    gradient = LPGD(tau=0.05, rho=rho, side=side)
    gurobi = _lpgd_grads("GUROBI", gradient, problem, params, outputs, values, weights)
    if rho == 0:
        reference = _lpgd_grads("HIGHS", gradient, problem, params, outputs, values, weights)
    else:
        reference = _lpgd_grads(
            "CLARABEL", gradient, problem, params, outputs, values, weights, solver_args={"eps": 1e-10}
        )
    for g, r in zip(gurobi, reference, strict=True):
        assert np.abs(r).max() > 1e-2
        np.testing.assert_allclose(g, r, atol=1e-8 if rho == 0 else 1e-7)


@pytest.mark.timeout(60)
def test_default_gradient_on_path_and_knapsack_equals_highs() -> None:
    path = grid_shortest_path(5)
    _, costs = shortest_path_data(16, path.cost.size, seed=2)
    w = [torch.tensor(np.random.default_rng(0).standard_normal((16, path.cost.size)))]
    args = (path.problem, [path.cost], [path.flow], [costs], w)
    gurobi, highs = _lpgd_grads("GUROBI", "lpgd", *args), _lpgd_grads("HIGHS", "lpgd", *args)
    assert np.abs(highs[0]).max() > 1e-2
    np.testing.assert_allclose(gurobi[0], highs[0], atol=1e-8)

    problem, value, pick = _knapsack()
    values = np.random.default_rng(6).uniform(0.5, 2.0, (8, 32))
    w = [torch.tensor(np.random.default_rng(1).standard_normal((8, 32)))]
    args = (problem, [value], [pick], [values], w)
    gurobi, highs = _lpgd_grads("GUROBI", "lpgd", *args), _lpgd_grads("HIGHS", "lpgd", *args)
    assert np.abs(highs[0]).max() > 1e-2
    np.testing.assert_allclose(gurobi[0], highs[0], atol=1e-9)


@pytest.mark.timeout(60)
def test_reused_model_equals_fresh_solves_and_warm_resolves_pivot_less() -> None:
    """One model through a sequence of items (costs and right-hand sides change) gives each
    item's fresh solve; a re-solve from the item's own basis takes far fewer pivots than cold."""
    problem, params, x, _, values = rhs_lp(seed=4)
    compiled = compile_problem(problem, params, [x], ConicForm("CLARABEL", quad_obj=True))
    rng = np.random.default_rng(3)
    theta = np.concatenate(values) * rng.uniform(0.7, 1.3, (6, sum(v.size for v in values)))
    batch = compiled.maps.apply(theta)
    solver, workspace = GurobiSolver({}), {}
    for i in range(batch.batch_size):
        reused, fresh = solver.solve(batch.item(i), workspace=workspace), solver.solve(batch.item(i))
        assert reused.status == fresh.status == "optimal"
        for field in ("x", "y", "s"):
            np.testing.assert_allclose(getattr(reused, field), getattr(fresh, field), atol=1e-9)

    moved, warm, cold = own_basis_re_solves(solver)
    assert sum(moved) >= 2, moved
    assert sum(warm) * 2 < sum(cold), (warm, cold)  # measured: 166 against 351


@pytest.mark.timeout(60)
def test_item_results_do_not_depend_on_neighbours_or_threads() -> None:
    """Forward solves start cold in the chunk's model: a batch, its items alone, and two threads
    calling one layer at once all give bitwise the same outputs and gradients."""
    path = grid_shortest_path(5)
    _, costs = shortest_path_data(24, path.cost.size, seed=5)
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="GUROBI")
    weights = torch.tensor(np.random.default_rng(2).standard_normal(costs.shape))

    def run(items: slice) -> tuple[np.ndarray, np.ndarray]:
        c = torch.tensor(costs[items], requires_grad=True)
        flow = layer(c)[0]
        (flow * weights[items]).sum().backward()
        return flow.detach().numpy(), c.grad.numpy()

    everything = slice(None)
    flows, grads = run(everything)
    alone = [run(slice(i, i + 1)) for i in range(0, 24, 7)]
    for (f, g), i in zip(alone, range(0, 24, 7), strict=True):
        np.testing.assert_array_equal(f[0], flows[i])
        np.testing.assert_array_equal(g[0], grads[i])
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [everything] * 4))
    for f, g in results:
        np.testing.assert_array_equal(f, flows)
        np.testing.assert_array_equal(g, grads)


@pytest.mark.timeout(120)
def test_worker_processes_give_the_same_outputs_and_gradients() -> None:
    """The solver settings and each item's basis travel to worker processes (a Gurobi model and
    environment do not pickle; the basis is plain arrays)."""
    loky = pytest.importorskip("loky")
    path = grid_shortest_path(5)
    _, costs = shortest_path_data(8, path.cost.size, seed=1)
    weights = torch.tensor(np.random.default_rng(0).standard_normal(costs.shape))

    def run(executor=None) -> tuple[np.ndarray, np.ndarray]:
        layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="GUROBI", executor=executor)
        c = torch.tensor(costs, requires_grad=True)
        flow = layer(c)[0]
        (flow * weights).sum().backward()
        return flow.detach().numpy(), c.grad.numpy()

    here, there = run(), run(loky.get_reusable_executor(max_workers=2))
    assert np.abs(here[1]).max() > 0.1
    np.testing.assert_array_equal(here[0], there[0])
    np.testing.assert_array_equal(here[1], there[1])


@pytest.mark.timeout(60)
def test_failure_statuses() -> None:
    x, c, h = cp.Variable(3, name="x"), cp.Parameter(3, name="c"), cp.Parameter(name="h")
    infeasible = cp.Problem(cp.Minimize(c @ x), [x >= 0, cp.sum(x) <= h])
    layer = CvxpyLayer(infeasible, [c, h], [x], solver="GUROBI", on_failure="nan")
    with pytest.warns(UserWarning, match="GUROBI failed on 1 of 2"):
        out = layer(torch.ones(2, 3), torch.tensor([1.0, -1.0]))[0]
    assert layer.last_statuses == ["optimal", "infeasible"]
    assert torch.isnan(out[1]).all() and torch.allclose(out[0], torch.zeros(3))
    unbounded = cp.Problem(cp.Minimize(c @ x), [x <= 1, cp.sum(x) <= h])
    with pytest.raises(SolverError, match="unbounded"):
        CvxpyLayer(unbounded, [c, h], [x], solver="GUROBI")(torch.tensor([1.0, -1.0, 0.0]), torch.tensor(1.0))
    pick = cp.Variable(3, boolean=True, name="pick")
    no_integer_point = cp.Problem(cp.Minimize(c @ pick), [cp.sum(pick) == 1.5])
    with pytest.raises(SolverError, match="infeasible"):
        CvxpyLayer(no_integer_point, [c], [pick], solver="GUROBI")(torch.ones(3))


@pytest.mark.timeout(60)
def test_limits_judged_as_highs_judges_them() -> None:
    problem, c, x, _, c_value = random_lp(30, 10, seed=2)
    layer = CvxpyLayer(problem, [c], [x], solver="GUROBI", solver_args={"max_iters": 1, "Presolve": 0})
    with pytest.raises(SolverError, match="iteration_limit"):  # an LP iterate at a limit is no solution
        layer(torch.tensor(c_value))
    problem, params, variables, values = mixed_milp()
    tensors = [torch.tensor(v) for v in values]
    first = CvxpyLayer(problem, params, variables, solver="GUROBI", solver_args={"SolutionLimit": 1})
    with pytest.warns(UserWarning, match="inaccurately"):  # a MIP incumbent at a limit is usable
        first(*tensors)
    assert first.last_statuses == ["optimal_inaccurate"]


@pytest.mark.timeout(60)
def test_settings() -> None:
    solver = GurobiSolver({"eps": 1e-12, "max_iters": 50, "verbose": False, "mipgap": 0.0})
    assert solver.settings["FeasibilityTol"] == solver.settings["OptimalityTol"] == 1e-9  # Gurobi's floor
    assert solver.settings["BarConvTol"] == 1e-12
    assert solver.settings["IterationLimit"] == 50.0 and solver.settings["OutputFlag"] == 0
    assert solver.settings["MIPGap"] == 0.0  # Gurobi's names are case-insensitive
    assert GurobiSolver({"eps": 1e-2}).settings["FeasibilityTol"] == 1e-6  # eps only tightens
    with pytest.raises(ValueError, match="Unknown GUROBI setting 'tol'"):
        GurobiSolver({"tol": 1e-3})
    with pytest.raises(TypeError, match="'Method' must be of type int"):
        GurobiSolver({"Method": "dual"})
    with pytest.raises(ValueError, match="GUROBI rejected a setting.*MIPGap"):
        GurobiSolver({"MIPGap": -1.0})
    problem, value, pick = _knapsack()
    assert CvxpyLayer(problem, [value], [pick], solver=cp.GUROBI).solver == "GUROBI"


@pytest.mark.timeout(60)
def test_model_beyond_the_size_limited_license_names_the_remedy() -> None:
    n = 2100
    x, c = cp.Variable(n, name="x"), cp.Parameter(n, name="c")
    layer = CvxpyLayer(cp.Problem(cp.Minimize(c @ x), [x >= 0, cp.sum(x) == 1]), [c], [x], solver="GUROBI")
    try:
        layer(torch.ones(n))
    except GurobiLicenseError as error:
        assert "size-limited license" in str(error) and "solver='HIGHS'" in str(error)
        assert f"{n} variables" in str(error)
    else:
        pytest.skip("this Gurobi license is not size-limited")


@pytest.mark.timeout(60)
def test_without_gurobipy_the_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['gurobipy'] = None\n"
        "from cvxlpgd.solvers import SOLVERS, make_solver\n"
        "assert 'GUROBI' not in SOLVERS\n"
        "try:\n"
        "    make_solver('gurobi', None)\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "needs gurobipy, which is not installed: pip install gurobipy" in out


@pytest.mark.timeout(60)
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_ctrl_c_still_raises_after_gurobi_solved_on_worker_threads() -> None:
    """Gurobi installs a C-level SIGINT handler for each solve; two solves overlapping on the
    layer's threads could leave one installed, and every later Ctrl-C was swallowed (2 of 3 runs
    before the layer re-installed Python's handler after each call)."""
    path = grid_shortest_path(5)
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="GUROBI")
    rng = np.random.default_rng(0)
    for _ in range(5):
        layer(torch.tensor(rng.uniform(0.1, 1.0, (64, len(path.edges)))))
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2.0)
