"""The layer inside the training loops people write: data-loader workers, Ctrl-C, nested and
shut-down executors, torch transforms and compile, in-place ops, repeated warnings, overflow.

Each test reproduces a user-level scenario that used to hang or go silently wrong.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import LPGD, CvxpyLayer, PerturbedSolveError, SolverError, SolverWarning
from cvxlpgd.examples import grid_shortest_path

N = 5


def box_qp(n: int = N):
    """minimize c'x + 0.05||x||^2 s.t. -1 <= x <= 1: unique solution, clamp(-10 c, -1, 1)."""
    x, c = cp.Variable(n, name="x"), cp.Parameter(n, name="c")
    problem = cp.Problem(cp.Minimize(c @ x + 0.05 * cp.sum_squares(x)), [x >= -1, x <= 1])
    return problem, c, x


def expected(costs: torch.Tensor) -> torch.Tensor:
    return torch.clamp(-10.0 * costs, -1.0, 1.0)


class _Costs(torch.utils.data.Dataset):
    """A dataset whose items are solved by the layer inside the worker process."""

    def __init__(self, layer: CvxpyLayer, costs: torch.Tensor):
        self.layer, self.costs = layer, costs

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        batch = self.costs[2 * i : 2 * i + 2]  # a batch of 2 uses the thread pool
        return self.layer(batch)[0]


@pytest.mark.timeout(120)
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_dataloader_workers_solve() -> None:
    """After the parent used the layer (so its thread pool exists), forked DataLoader workers
    that call the layer on batches must not hang on the inherited, thread-less pool."""
    problem, c, x = box_qp()
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL")
    costs = torch.linspace(-0.2, 0.2, 8 * N, dtype=torch.float64).reshape(8, N)
    torch.testing.assert_close(layer(costs)[0], expected(costs), atol=1e-6, rtol=0)
    loader = torch.utils.data.DataLoader(
        _Costs(layer, costs), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    solved = torch.cat(list(loader))
    torch.testing.assert_close(solved, expected(costs), atol=1e-6, rtol=0)


@pytest.mark.timeout(60)
def test_layer_called_from_a_task_of_its_own_executor() -> None:
    """An application pool passed as executor=, saturated by tasks that each call the layer with
    a batch: the calls must complete (their chunks run in the calling task) and be correct."""
    problem, c, x = box_qp()
    pool = ThreadPoolExecutor(max_workers=2)
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL", executor=pool)
    batches = [torch.full((6, N), 0.01 * (k + 1), dtype=torch.float64) for k in range(4)]
    try:
        futures = [pool.submit(lambda b=b: layer(b)[0]) for b in batches]
        for batch, future in zip(batches, futures, strict=True):
            torch.testing.assert_close(future.result(timeout=30), expected(batch), atol=1e-6, rtol=0)
    finally:
        pool.shutdown()


def test_parametrized_quad_form_in_a_constraint_is_rejected() -> None:
    """CVXPY treats quad_form's matrix as a constant inside constraints: the layer would solve
    with P.value whatever tensor is passed. It must refuse at construction, naming the constraint."""
    x = cp.Variable(3)
    P = cp.Parameter((3, 3), PSD=True)
    P.value = np.eye(3)
    c = cp.Parameter(3)
    problem = cp.Problem(cp.Minimize(c @ x), [cp.quad_form(x, P) <= 1])
    with pytest.raises(ValueError, match="Constraint 0 .*quad_form.*objective only"):
        CvxpyLayer(problem, [c, P], [x])


@pytest.mark.parametrize("gradient", ["lpgd", "implicit"])
def test_scs_iteration_limit_fails_in_both_gradient_modes(gradient: str) -> None:
    """SCS stopped by max_iters returns an iterate far from feasible: a failure, in both modes."""
    problem, c, x = box_qp()
    layer = CvxpyLayer(problem, [c], [x], gradient=gradient, solver_args={"max_iters": 2, "eps": 1e-12})
    costs = torch.tensor(np.random.default_rng(1).standard_normal((3, N)))
    with pytest.raises(SolverError, match="iteration_limit") as info:
        layer(costs)
    assert set(info.value.statuses.values()) == {"iteration_limit"}
    nan_layer = CvxpyLayer(
        problem, [c], [x], gradient=gradient, solver_args={"max_iters": 2, "eps": 1e-12}, on_failure="nan"
    )
    with pytest.warns(SolverWarning, match="failed on 3 of 3"):
        out = nan_layer(costs)[0]
    assert torch.isnan(out).all()


def _interrupt_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.timeout(120)
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
@pytest.mark.parametrize("gradient", ["lpgd", "implicit"])
@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_ctrl_c_interrupts_the_call(solver: str, gradient: str) -> None:
    """Ctrl-C during a long batched call raises KeyboardInterrupt promptly, even with
    on_failure='nan' (SCS turns SIGINT into a status), and the next call runs normally; also
    when the forward runs through diffcp (gradient='implicit'), outside the backend's solve."""
    rng = np.random.default_rng(0)
    n, m = 60, 40
    A = rng.standard_normal((m, n))
    x, c = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(c @ x + 0.01 * cp.sum_squares(x)), [A @ x <= 1, x >= -1, x <= 1])
    args = {"eps": 1e-10} if solver == "SCS" else {}
    layer = CvxpyLayer(
        problem, [c], [x], solver=solver, solver_args=args, on_failure="nan", gradient=gradient
    )
    costs = torch.tensor(rng.standard_normal((4000, n)))
    start = time.perf_counter()
    timer = _interrupt_after(0.5)
    with pytest.raises(KeyboardInterrupt):
        layer(costs)  # uninterrupted, this takes well over a minute here
    elapsed = time.perf_counter() - start
    timer.join()
    assert elapsed < 15, f"the interrupt took {elapsed:.1f} s to stop the call"
    small = layer(costs[:4])[0]
    assert layer.last_statuses == ["optimal"] * 4 and torch.isfinite(small).all()


def test_in_place_ops_on_unbatched_outputs() -> None:
    problem, c, x = box_qp()
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL", gradient=LPGD(tau=1e-4))
    cost = torch.tensor([0.05, -0.03, 0.2, -0.2, 0.0], dtype=torch.float64, requires_grad=True)
    out = layer(cost)[0]
    out.mul_(2.0)
    out.clamp_(-1.5, 1.5)
    out.sum().backward()
    # d(sum 2x)/dc = -20 on the free coordinates (|10 c| < 1), 0 on the clamped ones
    want = torch.tensor([-20.0, -20.0, 0.0, 0.0, -20.0], dtype=torch.float64)
    torch.testing.assert_close(cost.grad, want, atol=1e-5, rtol=0)


class _InlineExecutor(Executor):
    """An executor that does not say how many workers it has."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_executor_checked_and_shut_down_executor_named() -> None:
    """What is still rejected: a non-executor, a worker count that cannot be known without
    chunks=, a bad chunks=; and an executor shut down after construction is named at the call."""
    problem, c, x = box_qp()
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        CvxpyLayer(problem, [c], [x], executor=multiprocessing.get_context("spawn"))
    with pytest.raises(ValueError, match="cannot tell how many workers the _InlineExecutor has.*chunks="):
        CvxpyLayer(problem, [c], [x], executor=_InlineExecutor())
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="chunks must be a positive integer"):
            CvxpyLayer(problem, [c], [x], chunks=bad)
    layer = CvxpyLayer(problem, [c], [x], executor=_InlineExecutor(), chunks=3)
    cost = torch.linspace(-0.2, 0.2, 4 * N, dtype=torch.float64).reshape(4, N)
    torch.testing.assert_close(layer(cost)[0], expected(cost), atol=1e-5, rtol=0)
    pool = ThreadPoolExecutor(max_workers=2)
    layer = CvxpyLayer(problem, [c], [x], executor=pool)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="executor cannot take work.*shut down"):
        layer(torch.zeros(4, N, dtype=torch.float64))


def test_redundant_equality_with_dual_output_names_the_cause() -> None:
    """Flow conservation keeps one redundant row (the node balances sum to zero); with its dual as
    an output, every LPGD re-solve is infeasible: the error must say why and what to do."""
    path = grid_shortest_path(3)
    flow_con = path.problem.constraints[0]
    outputs = [path.flow, flow_con.dual_variables[0]]
    cost = torch.tensor(np.random.default_rng(0).uniform(1, 2, len(path.edges)), requires_grad=True)
    explicit = CvxpyLayer(path.problem, [path.cost], outputs, solver="CLARABEL", gradient=LPGD(tau=1.0))
    flow, dual = explicit(cost)
    with pytest.raises(PerturbedSolveError, match="linearly dependent.*Drop the redundant"):
        (flow.sum() + dual.sum()).backward()
    default = CvxpyLayer(path.problem, [path.cost], outputs, solver="CLARABEL")
    flow, dual = default(cost)
    with pytest.warns(SolverWarning, match="linearly dependent.*Drop the redundant"):
        (flow.sum() + dual.sum()).backward()


def test_functorch_transforms_raise_a_clear_error() -> None:
    problem, c, x = box_qp()
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL", gradient=LPGD(tau=1e-4))
    cost = torch.zeros(3, N, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="torch.func transforms.*batch dimension"):
        torch.func.vmap(lambda v: layer(v)[0])(cost)
    with pytest.raises(RuntimeError, match="torch.func transforms.*autograd.functional.jacobian"):
        torch.func.jacrev(lambda v: layer(v)[0])(cost[0])
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v)[0], cost[0] + 0.01)
    torch.testing.assert_close(jacobian, -10.0 * torch.eye(N, dtype=torch.float64), atol=1e-4, rtol=0)


def test_vectorized_jacobian_raises_naming_vectorize_false() -> None:
    """jacobian(..., vectorize=True) runs the backward batched, which cannot leave torch: a clear
    error naming the remedy, where torch used to fail on aten::detach; vectorize=False is exact."""
    problem, c, x = box_qp()
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL", gradient=LPGD(tau=1e-4))
    point = torch.full((N,), 0.01, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"vectorize=True.*Use vectorize=False"):
        torch.autograd.functional.jacobian(lambda v: layer(v)[0], point, vectorize=True)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v)[0], point, vectorize=False)
    torch.testing.assert_close(jacobian, -10.0 * torch.eye(N, dtype=torch.float64), atol=1e-4, rtol=0)


def test_jit_trace_raises_and_tracing_around_the_layer_works() -> None:
    """A trace would freeze the first input's solution: tracing through the layer raises, naming
    the remedies; the remedy (trace the part before the layer, call the layer after it) gives
    the eager model's outputs for new inputs."""
    problem, c, x = box_qp()
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL", gradient=LPGD(tau=1e-4))
    torch.manual_seed(0)
    linear = torch.nn.Linear(3, N).double()
    features = torch.randn(4, 3, dtype=torch.float64) * 0.01
    for check_trace in (True, False):  # without torch's own check, a trace used to freeze silently
        with pytest.raises(RuntimeError, match=r"torch.jit.trace.*around the layer.*torch.compile"):
            torch.jit.trace(torch.nn.Sequential(linear, layer), features, check_trace=check_trace)
    traced = torch.jit.trace(linear, features)
    fresh = torch.randn(4, 3, dtype=torch.float64) * 0.01
    expected = layer(linear(fresh))[0]
    torch.testing.assert_close(layer(traced(fresh))[0], expected, atol=0, rtol=0)
    assert (expected - layer(linear(features))[0]).abs().max() > 1e-4  # new inputs, new solution


@pytest.mark.timeout(180)
def test_torch_compile_runs_the_layer_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    problem, c, x = box_qp()
    layer = CvxpyLayer(problem, [c], [x], solver="CLARABEL", gradient=LPGD(tau=1e-4))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, N).double(), layer)
    compiled = torch.compile(model, backend="eager")
    for batch in (2, 5, 7):
        features = torch.randn(batch, 3, dtype=torch.float64) * 0.01
        eager_out = model(features)[0]
        eager_out.sum().backward()
        eager_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        out = compiled(features)[0]
        out.sum().backward()
        torch.testing.assert_close(out, eager_out)
        for p, g in zip(model.parameters(), eager_grads, strict=True):
            torch.testing.assert_close(p.grad, g)
        model.zero_grad()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


def test_repeated_failure_warnings_are_shown_once() -> None:
    """With on_failure='nan', each step's failing item differs; the warning text must not, so
    Python's default filter shows it once in a training loop."""
    problem, c, x = box_qp()
    b = cp.Parameter(name="b")
    problem = cp.Problem(problem.objective, [*problem.constraints, cp.sum(x) == b])
    layer = CvxpyLayer(problem, [c, b], [x], solver="CLARABEL", on_failure="nan")
    costs = torch.zeros(4, N, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        for step in range(12):
            rhs = torch.zeros(4, dtype=torch.float64)
            rhs[step % 4] = 10.0  # sum(x) = 10 is infeasible in the box: a different item each step
            layer(costs, rhs)
            assert layer.last_statuses.count("infeasible") == 1
    shown = [w for w in record if issubclass(w.category, SolverWarning)]
    assert len(shown) == 1, [str(w.message) for w in shown]
    assert "1 of 4" in str(shown[0].message)


def test_overflowing_parameter_is_named() -> None:
    problem, c, x = box_qp()
    scaled = cp.Problem(cp.Minimize(1e10 * (c @ x) + 0.05 * cp.sum_squares(x)), problem.constraints)
    layer = CvxpyLayer(scaled, [c], [x], solver="CLARABEL")
    with pytest.raises(ValueError, match="inf or NaN after scaling.*'c' has entries up to 1e\\+300"):
        layer(torch.tensor([1e300, 0, 0, 0, 0], dtype=torch.float64))
