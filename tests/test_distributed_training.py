"""Data-parallel training (torch DDP, gloo, 2 CPU ranks) of ``Linear -> CvxpyLayer`` on shards of
a batch must end at the parameters a single process reaches on the whole batch.

DDP averages the ranks' gradients, so with mean-reduced losses each rank's incoming gradient is
world_size times the single process's; LPGD is not invariant to that scale (its perturbation is
tau * dx), and ``LPGD(tau / world_size)`` makes each rank perturb exactly as the single process.
"""

from __future__ import annotations

import os
import socket
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from cvxlpgd import LPGD, CvxpyLayer
from cvxlpgd.examples import grid_shortest_path, shortest_path_data

WORLD, BATCH, STEPS, TAU, FEATURES = 2, 8, 3, 2.0, 5


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    path = grid_shortest_path(3)
    features, costs = shortest_path_data(BATCH, len(path.edges), num_features=FEATURES, seed=2)
    return torch.tensor(features), torch.tensor(costs)


def _train(features: torch.Tensor, costs: torch.Tensor, tau: float, wrap=lambda model: model) -> np.ndarray:
    """STEPS of SGD on the decision loss mean(c' x(model(features))); the final parameters."""
    path = grid_shortest_path(3)
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, len(path.edges)).double()
    trained = wrap(model)
    cores = os.cpu_count() or 1
    layer = CvxpyLayer(
        path.problem,
        [path.cost],
        [path.flow],
        solver="HIGHS",
        gradient=LPGD(tau=tau),
        executor=ThreadPoolExecutor(max(1, cores // WORLD)),  # each rank its share of the cores
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        optimizer.zero_grad()
        (flow,) = layer(trained(features))
        (flow * costs).sum(dim=1).mean().backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()


def _rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        features, costs = _data()
        shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        params = _train(
            features[shard], costs[shard], TAU / WORLD, lambda m: torch.nn.parallel.DistributedDataParallel(m)
        )
        results.put((rank, params))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_rank_ddp_matches_one_process_on_the_global_batch() -> None:
    features, costs = _data()
    single = _train(features, costs, TAU)
    torch.manual_seed(0)
    initial = torch.nn.Linear(FEATURES, single.size // (FEATURES + 1)).double()
    moved = single - torch.cat([p.detach().flatten() for p in initial.parameters()]).numpy()
    assert np.abs(moved).max() > 1e-3  # training moved the parameters: the comparison means something
    results = tmp.get_context("spawn").SimpleQueue()
    tmp.start_processes(_rank, args=(_free_port(), results), nprocs=WORLD, start_method="spawn")
    ranks = dict(results.get() for _ in range(WORLD))
    for rank in range(WORLD):
        np.testing.assert_allclose(ranks[rank], single, rtol=0, atol=1e-12)


def test_ranks_sharing_a_machine_are_warned_once(monkeypatch) -> None:
    """Two ranks on one machine with the default pool: one warning naming the per-rank share."""
    import cvxlpgd.ranks as ranks

    monkeypatch.setattr(ranks, "_warned", False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    path = grid_shortest_path(3)
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="HIGHS")
    cost = torch.ones(2, len(path.edges), dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(cost)
        layer(cost)
    texts = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    cores = os.cpu_count() or 1
    assert len(texts) == 1 and f"ThreadPoolExecutor(max_workers={max(1, cores // 2)})" in texts[0]
    assert caught[0].filename == __file__  # attributed to the caller's line
    layer_with_pool = CvxpyLayer(path.problem, [path.cost], [path.flow], executor=ThreadPoolExecutor(1))
    monkeypatch.setattr(ranks, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer_with_pool(cost)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
