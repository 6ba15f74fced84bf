"""Code written for cvxpylayers runs with the import changed: its signature, its solver_args
keys, warm starts, its exception types and phrases, power cones in implicit mode, no derivative
work without grad. (Geometric programs: test_dgp.py; declared-attribute leniency:
test_validation.py.)"""

from __future__ import annotations

from concurrent.futures import Executor, Future

import cvxpy as cp
import diffcp
import numpy as np
import pytest
import torch

import cvxlpgd.gradients.implicit as implicit_module
from cvxlpgd import LPGD, CvxpyLayer, Implicit
from cvxlpgd.examples import grid_shortest_path, shortest_path_data

TIGHT_SCS = {"eps": 1e-10, "max_iters": 100_000}


def least_squares(m: int = 6, n: int = 3):
    A, b, x = cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b"), cp.Variable(n, name="x")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.sum_squares(x)))
    rng = np.random.default_rng(0)
    values = [torch.tensor(rng.standard_normal((m, n))), torch.tensor(rng.standard_normal(m))]
    return problem, A, b, x, values


def test_peer_signature_positional_and_keyword() -> None:
    """CvxpyLayer(problem, parameters, variables, solver, gp, verbose, canon_backend, solver_args)."""
    problem, A, b, x, values = least_squares()
    reference = CvxpyLayer(problem, [A, b], [x], solver="CLARABEL")(*values)[0]
    positional = CvxpyLayer(problem, [A, b], [x], "CLARABEL", False, False, "SCIPY", {"eps": 1e-9})
    keyword = CvxpyLayer(
        problem,
        parameters=[A, b],
        variables=[x],
        solver=cp.CLARABEL,
        gp=False,
        verbose=False,
        canon_backend="CPP",
        solver_args={"eps": 1e-9},
    )
    for layer in (positional, keyword):
        torch.testing.assert_close(layer(*values)[0], reference, atol=1e-6, rtol=0)


def test_bad_canon_backend_is_named() -> None:
    problem, A, b, x, _ = least_squares()
    with pytest.raises(ValueError, match="canon_backend='BOGUS'"):
        CvxpyLayer(problem, [A, b], [x], canon_backend="BOGUS")


def test_verbose_reaches_the_solver(capfd: pytest.CaptureFixture) -> None:
    problem, A, b, x, values = least_squares()
    CvxpyLayer(problem, [A, b], [x], solver="SCS", verbose=True)(*values)
    assert "SCS" in capfd.readouterr().out


def test_solve_method_selects_the_solver() -> None:
    problem, A, b, x, values = least_squares()
    layer = CvxpyLayer(problem, [A, b], [x], solver_args={"solve_method": "Clarabel"})
    assert layer.solver == "CLARABEL"
    per_call = CvxpyLayer(problem, [A, b], [x])
    out = per_call(*values, solver_args={"solve_method": "CLARABEL"})[0]
    torch.testing.assert_close(out, layer(*values)[0], atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="'ECOS' is not available"):
        CvxpyLayer(problem, [A, b], [x], solver_args={"solve_method": "ECOS"})
    with pytest.raises(ValueError, match="either solver= or solver_args\\['solve_method'\\]"):
        CvxpyLayer(problem, [A, b], [x], solver="SCS", solver_args={"solve_method": "SCS"})


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("dense", Implicit(mode="dense")),
        ("lsqr", Implicit(mode="lsqr")),
        ("lsmr", Implicit(mode="lsmr")),
        ("lpgd", LPGD(tau=1e-4, rho=0.0, side="central")),
        ("lpgd_right", LPGD(tau=1e-4, rho=0.0, side="lower")),
        ("lpgd_left", LPGD(tau=1e-4, rho=0.0, side="upper")),
    ],
)
def test_mode_selects_the_gradient(mode: str, expected) -> None:
    """Each mode gives the gradient of the method it names: the same numbers as passing it."""
    problem, A, b, x, values = least_squares()
    derivative = {"derivative_kwargs": {"tau": 1e-4, "rho": 0.0}} if mode.startswith("lpgd") else {}
    args = {"mode": mode, **derivative, **TIGHT_SCS}
    layer = CvxpyLayer(problem, [A, b], [x], solver_args=args)
    assert layer.gradient == expected
    grads = {}
    for name, kwargs in (("peer", {}), ("ours", {"gradient": expected})):
        tensors = [v.clone().requires_grad_(True) for v in values]
        chosen = (
            layer if name == "peer" else CvxpyLayer(problem, [A, b], [x], solver_args=TIGHT_SCS, **kwargs)
        )
        chosen(*tensors)[0].sum().backward()
        grads[name] = torch.cat([t.grad.ravel() for t in tensors])
    torch.testing.assert_close(grads["peer"], grads["ours"])
    assert grads["peer"].abs().max() > 1e-3


def test_n_jobs_sets_the_workers() -> None:
    problem, A, b, x, values = least_squares()
    batch = [v.expand(5, *v.shape).clone() for v in values]
    serial = CvxpyLayer(problem, [A, b], [x], solver_args={"n_jobs_forward": 1, "n_jobs_backward": 1})
    assert serial.executor._max_workers == 1 and serial.backward_executor._max_workers == 1
    parallel = CvxpyLayer(problem, [A, b], [x], solver_args={"n_jobs_forward": -1})
    torch.testing.assert_close(serial(*batch)[0], parallel(*batch)[0], atol=0, rtol=0)
    with pytest.raises(ValueError, match="n_jobs_forward"):
        CvxpyLayer(problem, [A, b], [x], solver_args={"n_jobs_forward": 0})


class CountingExecutor(Executor):
    """Runs each task at once on the calling thread and counts them."""

    max_workers = 2

    def __init__(self) -> None:
        self.tasks = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.tasks += 1
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_n_jobs_forward_of_a_call_overrides_the_layers_executor_for_that_call_only() -> None:
    """The constructor and a call resolve executor= and n_jobs_forward by the same rule: at most one
    of the two at construction; a call's n_jobs_forward replaces the layer's executor, once."""
    problem, A, b, x, values = least_squares()
    batch = [v.expand(4, *v.shape).clone() for v in values]
    counting = CountingExecutor()
    with pytest.raises(ValueError, match=r"either executor= or solver_args\['n_jobs_forward'\]"):
        CvxpyLayer(problem, [A, b], [x], executor=counting, solver_args={"n_jobs_forward": 1})
    layer = CvxpyLayer(problem, [A, b], [x], executor=counting)
    reference = layer(*batch)[0]
    assert counting.tasks == 2  # one per chunk, one chunk per worker
    override = layer(*batch, solver_args={"n_jobs_forward": 1})[0]
    assert counting.tasks == 2 and layer.executor is counting
    torch.testing.assert_close(override, reference, atol=0, rtol=0)
    layer(*batch)
    assert counting.tasks == 4


@pytest.mark.timeout(120)
def test_warm_start_saves_scs_iterations_in_a_training_loop() -> None:
    """Shortest-path training with SCS: warm starts from the previous step's solution of the
    same batch position cut iterations; the result stays a solution (same decisions)."""
    path = grid_shortest_path(5)
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="SCS", solver_args={"eps": 1e-6})
    _, costs = shortest_path_data(16, len(path.edges), seed=0)
    costs = torch.tensor(costs)
    iterations = {}
    for warm in (False, True):
        counts = []
        for step in range(6):
            predicted = costs * (1.0 + 0.02 * step)  # a model whose predictions drift slowly
            flows = layer(predicted, warm_start=warm)[0]
            counts.append(sum(layer.last_iterations))
        iterations[warm] = sum(counts[1:])  # the first warm call has nothing to start from
        assert torch.allclose(flows.round(), layer(predicted)[0].round())
    assert iterations[True] < 0.8 * iterations[False], iterations


def test_solver_error_is_a_diffcp_solver_error() -> None:
    x, b = cp.Variable(2), cp.Parameter(2)
    problem = cp.Problem(cp.Minimize(cp.sum(x)), [x >= b, x <= 0])
    layer = CvxpyLayer(problem, [b], [x], gradient="implicit")
    with pytest.raises(diffcp.SolverError):
        layer(torch.tensor([1.0, 1.0]))


def test_power_cone_forward_works_in_implicit_mode() -> None:
    x = cp.Variable(3)
    a = cp.Parameter(3, name="a")
    problem = cp.Problem(cp.Minimize(a @ x), [cp.PowCone3D(x[0], x[1], x[2], 0.3), x[0] <= 2, x[1] <= 2])
    layer = CvxpyLayer(problem, [a], [x], gradient="implicit", solver_args={"eps": 1e-9})
    values = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
    a.value = values.detach().numpy()
    problem.solve(solver=cp.SCS, eps=1e-9)
    out = layer(values)[0]
    np.testing.assert_allclose(out.detach().numpy(), x.value, atol=1e-4)
    with pytest.raises(NotImplementedError, match="power cone.*LPGD"):
        out.sum().backward()


def test_implicit_under_no_grad_does_no_derivative_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Solve only: diffcp's solve-and-derivative is not called (a spy around the real function)."""
    calls = []
    real = implicit_module.diffcp.solve_and_derivative_internal

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(implicit_module.diffcp, "solve_and_derivative_internal", spy)
    problem, A, b, x, values = least_squares()
    layer = CvxpyLayer(problem, [A, b], [x], gradient="implicit", solver_args=TIGHT_SCS)
    with torch.no_grad():
        solved = layer(*values)[0]
    assert calls == []
    with_grad = layer(*[v.clone().requires_grad_(True) for v in values])[0]
    assert calls == [1]
    torch.testing.assert_close(solved, with_grad.detach(), atol=1e-7, rtol=0)
