"""Robustness: threads, determinism, copies and serialization, no-grad use, large batches, memory."""

from __future__ import annotations

import copy
import gc
import inspect
import pickle
import tracemalloc
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import LPGD, CvxpyLayer, SolverWarning
from cvxlpgd.cone import Solution
from cvxlpgd.errors import PickleWarning

SOLVERS = ["SCS", "CLARABEL"]
ARGS = {"SCS": {"eps": 1e-9, "max_iters": 50_000}, "CLARABEL": {}}
N, M = 5, 4


def lp_problem(n: int = N, m: int = M, seed: int = 0):
    """minimize c'x + 0.05 ||x||^2  s.t.  A x <= b,  0 <= x <= 1 (a QP-regularized LP: unique x)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    x = cp.Variable(n, name="x")
    c = cp.Parameter(n, name="c")
    b = cp.Parameter(m, name="b")
    con = A @ x <= b
    problem = cp.Problem(cp.Minimize(c @ x + 0.05 * cp.sum_squares(x)), [con, x >= 0, x <= 1])
    return problem, c, b, x, con, A


def make_layer(solver: str, **kwargs) -> CvxpyLayer:
    problem, c, b, x, con, _ = lp_problem()
    kwargs.setdefault("solver_args", ARGS[solver])
    return CvxpyLayer(problem, [c, b], [x, con.dual_variables[0]], solver=solver, **kwargs)


def inputs(seed: int, batch: int | None = 3):
    """Feasible by construction: b = A x0 + slack with x0 in [0.2, 0.8]^n."""
    _, _, _, _, _, A = lp_problem()
    rng = np.random.default_rng(1000 + seed)
    B = batch or 1
    c = rng.standard_normal((B, N))
    x0 = rng.uniform(0.2, 0.8, (B, N))
    b = x0 @ A.T + rng.uniform(0.05, 1.0, (B, M))
    if batch is None:
        c, b = c[0], b[0]
    return torch.tensor(c), torch.tensor(b)


def solve_and_grad(layer: CvxpyLayer, c: torch.Tensor, b: torch.Tensor):
    c = c.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    x, y = layer(c, b)
    (x * torch.linspace(-1.0, 1.0, N, dtype=x.dtype)).sum().backward()
    return x.detach(), y.detach(), c.grad, b.grad


def assert_identical(first, second):
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b), (a - b).abs().max()


# --------------------------------------------------------------------------------------------
# Threads and determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_concurrent_calls_match_sequential(solver):
    layer = make_layer(solver, gradient=LPGD(tau=0.5))
    work = [inputs(seed) for seed in range(12)]  # 4 threads x 3 calls each, all different
    sequential = [solve_and_grad(layer, *w) for w in work]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda w: solve_and_grad(layer, *w), work))
    for seq, con in zip(sequential, concurrent, strict=True):
        assert_identical(seq, con)


@pytest.mark.parametrize("solver", SOLVERS)
def test_concurrent_calls_with_a_shared_executor(solver):
    """The layer's own executor is shared by concurrent calls: still identical results."""
    with ThreadPoolExecutor(max_workers=2) as inner:
        layer = make_layer(solver, executor=inner)
        work = [inputs(seed, batch=4) for seed in range(8)]
        sequential = [layer(*w) for w in work]
        with ThreadPoolExecutor(max_workers=4) as outer:
            concurrent = list(outer.map(lambda w: layer(*w), work))
    for seq, con in zip(sequential, concurrent, strict=True):
        assert_identical(seq, con)


@pytest.mark.parametrize("solver", SOLVERS)
def test_identical_inputs_give_identical_outputs(solver):
    layer = make_layer(solver)
    first = solve_and_grad(layer, *inputs(0))
    layer(*inputs(1))  # other work in between must not leak into the next call
    layer(*inputs(2, batch=7))
    second = solve_and_grad(layer, *inputs(0))
    assert_identical(first, second)
    fresh = solve_and_grad(make_layer(solver), *inputs(0))
    assert_identical(first, fresh)


@pytest.mark.parametrize("solver", SOLVERS)
def test_item_does_not_depend_on_its_batch_neighbours(solver):
    layer = make_layer(solver)
    c, b = inputs(0, batch=6)
    x_all, y_all = layer(c, b)
    for i in (0, 3, 5):
        x_i, y_i = layer(c[i], b[i])
        torch.testing.assert_close(x_all[i], x_i, atol=1e-7, rtol=0)
        torch.testing.assert_close(y_all[i], y_i, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Copies and serialization
# --------------------------------------------------------------------------------------------


def model(solver: str) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, N, dtype=torch.float64), make_layer_c_only(solver))


def make_layer_c_only(solver: str) -> CvxpyLayer:
    problem, c, b, x, con, A = lp_problem()
    fixed = cp.Problem(problem.objective, [A @ x <= 1.0, x >= 0, x <= 1])
    return CvxpyLayer(fixed, [c], [x], solver=solver, solver_args=ARGS[solver])


FEATURES = torch.tensor(np.random.default_rng(7).standard_normal((6, 4)))


@pytest.mark.parametrize("solver", SOLVERS)
def test_deepcopy(solver):
    layer = make_layer(solver)
    clone = copy.deepcopy(layer)
    assert clone is not layer
    assert_identical(solve_and_grad(layer, *inputs(0)), solve_and_grad(clone, *inputs(0)))
    net = model(solver)
    net_clone = copy.deepcopy(net)
    assert_identical(net(FEATURES), net_clone(FEATURES))


@pytest.mark.parametrize("solver", SOLVERS)
def test_pickle_round_trip(solver):
    layer = make_layer(solver, gradient=LPGD(tau=0.3, rho=0.1, side="lower"), on_failure="nan")
    loaded = pickle.loads(pickle.dumps(layer))
    assert loaded.gradient == LPGD(tau=0.3, rho=0.1, side="lower")
    assert loaded.on_failure == "nan" and loaded.solver == solver
    assert_identical(solve_and_grad(layer, *inputs(1)), solve_and_grad(loaded, *inputs(1)))


def test_pickle_with_a_custom_executor():
    """A thread pool does not pickle: the loaded layer runs on the default pool, and the pickling
    line is warned (it used to be silent); the executor can be given again after loading."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        layer = make_layer("CLARABEL", executor=pool)
        with pytest.warns(PickleWarning, match="ThreadPoolExecutor.*cannot be pickled") as caught:
            line = inspect.currentframe().f_lineno + 1
            loaded = pickle.loads(pickle.dumps(layer))
        assert (caught[0].filename, caught[0].lineno) == (__file__, line)
        assert issubclass(PickleWarning, SolverWarning)
        assert layer.executor is pool  # pickling does not change the original
        assert loaded.executor is None
        assert_identical(make_layer("CLARABEL")(*inputs(2)), loaded(*inputs(2)))
        loaded.executor = pool
        assert loaded.executor is pool
        assert_identical(layer(*inputs(2)), loaded(*inputs(2)))


class InlineExecutor(Executor):
    """Runs each task at once on the calling thread; has no locks, so it pickles."""

    max_workers = 2

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_pickle_keeps_an_executor_that_pickles():
    layer = make_layer("CLARABEL", executor=InlineExecutor())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pickle.loads(pickle.dumps(layer))
    assert isinstance(loaded.executor, InlineExecutor) and loaded.executor is not layer.executor
    assert_identical(solve_and_grad(layer, *inputs(4)), solve_and_grad(loaded, *inputs(4)))


def test_deepcopy_shares_the_executor():
    """A copied model runs on the same pool (an executor is a resource, not a value)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        layer = make_layer("CLARABEL", executor=pool)
        clone = copy.deepcopy(layer)
        assert clone.executor is pool
        assert_identical(solve_and_grad(layer, *inputs(5)), solve_and_grad(clone, *inputs(5)))


def test_pickle_keeps_the_n_jobs_thread_counts():
    layer = make_layer("CLARABEL", solver_args={"n_jobs_forward": 1, "n_jobs_backward": 1})
    loaded = pickle.loads(pickle.dumps(layer))
    assert loaded.executor._max_workers == 1 and loaded.backward_executor._max_workers == 1


@pytest.mark.parametrize("solver", SOLVERS)
def test_torch_save_load_of_a_model(solver, tmp_path):
    net = model(solver)
    path = tmp_path / "model.pt"
    torch.save(net, path)
    loaded = torch.load(path, weights_only=False)
    assert_identical(net(FEATURES), loaded(FEATURES))
    # the loaded model trains: gradients reach the Linear's weights
    (x,) = loaded(FEATURES)
    (x * torch.linspace(-1.0, 1.0, N, dtype=x.dtype)).sum().backward()
    weight = loaded[0].weight.grad
    assert weight is not None and torch.isfinite(weight).all() and weight.abs().sum() > 0
    # and so does the state_dict round trip (the layer has no tensors of its own)
    fresh = model(solver)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=False).state_dict())
    assert_identical(net(FEATURES), fresh(FEATURES))


# --------------------------------------------------------------------------------------------
# Without autograd
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_no_grad_and_inputs_without_grad(solver):
    layer = make_layer(solver)
    c, b = inputs(3)
    reference = solve_and_grad(layer, c, b)[:2]
    with torch.no_grad():
        out = layer(c.clone().requires_grad_(True), b)
    assert not any(t.requires_grad for t in out)
    assert_identical(reference, out)
    out = layer(c, b)  # grad mode on, but no input requires grad
    assert not any(t.requires_grad for t in out)
    assert_identical(reference, out)


@pytest.mark.parametrize("solver", SOLVERS)
def test_only_some_inputs_require_grad(solver):
    layer = make_layer(solver)
    c, b = inputs(4)
    c = c.clone().requires_grad_(True)
    x, y = layer(c, b)
    assert x.requires_grad
    assert y.requires_grad
    (x * torch.linspace(-1.0, 1.0, N, dtype=x.dtype)).sum().backward()
    assert c.grad is not None and torch.isfinite(c.grad).all()
    assert b.grad is None


# --------------------------------------------------------------------------------------------
# Large batches and memory
# --------------------------------------------------------------------------------------------


def solutions_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Solution)


@pytest.fixture(scope="module")
def small_lp():
    x = cp.Variable(3, name="x")
    c = cp.Parameter(3, name="c")
    b = cp.Parameter(2, name="b")
    A = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0]])
    con = A @ x <= b
    problem = cp.Problem(cp.Minimize(c @ x), [con, x >= 0, x <= 1])
    return CvxpyLayer(problem, [c, b], [x, con.dual_variables[0]], solver="CLARABEL")


def test_large_batch_bounded_memory_and_nothing_retained(small_lp):
    layer = small_lp
    batch = 10_000
    rng = np.random.default_rng(0)
    c = torch.tensor(rng.standard_normal((batch, 3)))
    b = torch.tensor(rng.uniform(0.5, 2.0, (batch, 2)))
    before = solutions_alive()
    tracemalloc.start()
    try:
        with torch.no_grad():
            x, y = layer(c, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.shape == (batch, 3) and y.shape == (batch, 2)
    assert torch.isfinite(x).all() and torch.isfinite(y).all()
    assert layer.last_statuses == ["optimal"] * batch
    assert peak < 500e6, f"peak traced memory {peak / 1e6:.0f} MB"
    # nothing per item is kept by the layer after a no-grad call, except statuses and iterations
    assert solutions_alive() == before
    held = [
        k
        for owner in (layer, layer.core)  # the layer's numpy side keeps the per-call records
        for k, v in vars(owner).items()
        if isinstance(v, (list, tuple, dict)) and len(v) >= batch
    ]
    assert held == ["last_statuses", "last_iterations"], held
    assert all(isinstance(s, str) for s in layer.last_statuses)
    assert all(isinstance(k, int) for k in layer.last_iterations)
    # spot-check a few items against single solves
    for i in (0, 4321, batch - 1):
        xi, _ = layer(c[i], b[i])
        torch.testing.assert_close(x[i], xi, atol=1e-7, rtol=0)


def test_solutions_are_released_with_the_graph():
    """With grad, the solutions live exactly as long as the autograd graph that needs them."""
    layer = make_layer("CLARABEL")
    before = solutions_alive()
    c, b = inputs(5, batch=20)
    c.requires_grad_(True)
    x, y = layer(c, b)
    assert solutions_alive() >= before + 20  # kept for the backward
    x.sum().backward()
    del x, y
    assert solutions_alive() == before


def test_torch_module_api_is_not_shadowed() -> None:
    """``layer.parameters()`` is torch's (no learnable tensors); the CVXPY ones have their own name,
    so optimizers and module walkers work on models that contain a layer."""
    layer = make_layer("CLARABEL")
    assert list(layer.parameters()) == []
    model = torch.nn.Sequential(torch.nn.Linear(3, N).double(), layer)
    assert len(list(model.parameters())) == 2
    assert [p.name() for p in layer.cvxpy_parameters] == ["c", "b"]


@pytest.mark.parametrize("gradient", ["lpgd", "implicit"])
def test_second_derivative_raises(gradient: str) -> None:
    """A gradient penalty (create_graph=True, then a backward through the gradient, with a loss
    weight that needs no grad) must raise, not return a wrong second derivative."""
    layer = make_layer("SCS", gradient=gradient)
    c = torch.tensor([0.3, -0.2, 0.1, 0.4, -0.5], dtype=torch.float64, requires_grad=True)
    b = torch.ones(M, dtype=torch.float64)
    x, _ = layer(c, b)
    weight = torch.linspace(1.0, 2.0, N, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="first-order only"):
        (grad_c,) = torch.autograd.grad((weight * x).sum(), c, create_graph=True)
        grad_c.pow(2).sum().backward()
