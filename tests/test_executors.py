"""Executors whose workers are other processes or machines: spawn and fork process pools, loky,
a Dask cluster of worker processes, Ray. Each must give outputs and gradients bitwise equal to
a thread pool with as many workers (the chunks are then the same), for every solver and LPGD
side and for the implicit gradient; and the worker count must come from the executor."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
import torch

from cvxlpgd import LPGD, CvxpyLayer
from cvxlpgd.batch import worker_count
from cvxlpgd.examples import grid_shortest_path, shortest_path_data
from cvxlpgd.pipeline import differentiate_chunk
from cvxlpgd.solvers import make_solver

WORKERS = 2
BATCH = 6
# (solver, gradient, whether the constraints' duals are outputs too: then LPGD perturbs b)
CASES = [
    ("SCS", LPGD(tau=0.5, side="central"), True),
    ("SCS", "implicit", False),
    ("CLARABEL", LPGD(tau=0.5, side="lower"), True),
    ("CLARABEL", "implicit", False),
    ("HIGHS", LPGD(tau=0.5, side="upper"), True),
    ("HIGHS", LPGD(tau=0.5, side="central"), False),
    ("CLARABEL", "lpgd", True),  # the default, AdaptiveLPGD
]
IDS = [
    f"{solver}-{getattr(gradient, 'side', gradient)}-{'duals' if duals else 'x'}"
    for solver, gradient, duals in CASES
]


def solve_and_differentiate(executor, solver: str, gradient, duals: bool) -> list[np.ndarray]:
    """Outputs and the cost gradient of a 4 x 4 grid shortest-path layer on one batch."""
    path = grid_shortest_path(4)
    bounds = path.problem.constraints[2]  # flow <= 1: its duals are non-zero on the path
    outputs = [path.flow, bounds.dual_variables[0]] if duals else [path.flow]
    layer = CvxpyLayer(
        path.problem, [path.cost], outputs, solver=solver, gradient=gradient, executor=executor
    )
    cost = torch.tensor(shortest_path_data(BATCH, len(path.edges), seed=3)[1], requires_grad=True)
    results = layer(cost)
    weights = torch.tensor(np.random.default_rng(0).standard_normal((BATCH, len(path.edges))))
    loss = (results[0] * weights).sum() + (results[1].sum() if duals else 0.0)
    loss.backward()
    return [r.detach().numpy() for r in results] + [cost.grad.numpy()]


@pytest.fixture(scope="module")
def reference():
    """What a thread pool with WORKERS workers gives, case by case."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return {i: solve_and_differentiate(pool, *case) for i, case in enumerate(CASES)}


def assert_bitwise(reference: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert np.abs(reference[-1]).max() > 0  # a gradient that is all zeros would prove nothing
    for want, have in zip(reference, got, strict=True):
        np.testing.assert_array_equal(have, want)


@pytest.fixture(scope="module", params=["spawn", "fork"])
def process_pool(request):
    if request.param not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {request.param} start method here")
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context(request.param)) as pool:
        yield pool


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_process_pool_bitwise_equal_to_threads(process_pool, reference, case: int) -> None:
    assert_bitwise(reference[case], solve_and_differentiate(process_pool, *CASES[case]))


@pytest.mark.timeout(60)
def test_loky_bitwise_equal_to_threads(reference) -> None:
    loky = pytest.importorskip("loky")
    pool = loky.get_reusable_executor(max_workers=WORKERS)
    assert worker_count(pool) == WORKERS
    for i, case in enumerate(CASES):
        assert_bitwise(reference[i], solve_and_differentiate(pool, *case))


@pytest.mark.timeout(120)
def test_dask_cluster_bitwise_equal_to_threads(reference) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            processes=True, n_workers=WORKERS, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = client.get_executor()
        assert worker_count(executor) == WORKERS  # the cluster's threads, not this machine's cores
        for i in (0, 1, 4):  # SCS central with duals, SCS implicit, HiGHS (its basis travels)
            assert_bitwise(reference[i], solve_and_differentiate(executor, *CASES[i]))


@pytest.mark.timeout(120)
def test_ray_bitwise_equal_to_threads(reference) -> None:
    ray = pytest.importorskip("ray")
    from cvxlpgd.executors import RayExecutor

    with pytest.raises(RuntimeError, match=r"call ray.init\(\)"):
        RayExecutor()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    try:
        executor = RayExecutor()
        assert worker_count(executor) == WORKERS
        for i in (0, 4):
            assert_bitwise(reference[i], solve_and_differentiate(executor, *CASES[i]))
        executor.shutdown()
        with pytest.raises(RuntimeError, match="executor cannot take work"):
            solve_and_differentiate(executor, *CASES[0])
    finally:
        ray.shutdown()


class _CountingPool(ThreadPoolExecutor):
    """A thread pool that counts the tasks it is given."""

    submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.timeout(30)
def test_worker_count_comes_from_the_executor() -> None:
    with ThreadPoolExecutor(3) as threads, ProcessPoolExecutor(5) as processes:
        assert (worker_count(threads), worker_count(processes)) == (3, 5)
    path = grid_shortest_path(3)
    cost = torch.ones(7, len(path.edges), dtype=torch.float64)
    for chunks, want in ((None, 3), (2, 2), (5, 5)):
        pool = _CountingPool(3)
        layer = CvxpyLayer(path.problem, [path.cost], [path.flow], executor=pool, chunks=chunks)
        layer(cost)
        assert pool.submitted == want - 1  # the calling thread runs one chunk, the pool the others
        pool.shutdown()


@pytest.mark.timeout(30)
def test_worker_sends_back_only_the_blocks_parameters_enter() -> None:
    """A cost-only LP: of the data gradients only dc reaches a parameter, so only dc comes back
    from a worker; and what a worker receives and returns pickles (a HiGHS basis included)."""
    path = grid_shortest_path(4)
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="HIGHS")
    compiled = layer.compiled()
    program = compiled.maps.apply(shortest_path_data(2, len(path.edges), seed=1)[1])
    solver, method = make_solver("HIGHS", {}), layer.gradient
    solved = pickle.loads(pickle.dumps(method.solve(solver, program, False, True, [])))
    assert solved.solutions[0].basis is not None
    dx = np.ones((2, len(path.edges)))
    result = pickle.loads(
        pickle.dumps(differentiate_chunk(method, compiled.maps.varying, solver, program, solved, dx, None, 0))
    )
    assert compiled.maps.varying == {"c"}
    grad = result.grads[0]
    assert grad.A is None and grad.b is None and grad.P is None
    full = method.differentiate(solver, program, solved, dx, None, 0).grads[0]
    np.testing.assert_array_equal(grad.c, full.c)
    assert np.abs(full.A).max() > 0  # what was dropped was not zero: it only never reaches a parameter
