"""Training-shaped measurements on the shortest-path problem of ``cvxlpgd.examples``.

* ``dfl_epoch``: one decision-focused-learning epoch on the 5x5 grid (1000 items, batch 32,
  a linear model from features to edge costs, SPO-style loss ``true_cost' x(predicted)``,
  Adam), on an executor with one worker: seconds per epoch for the forward alone (no_grad),
  forward + LPGD lower and forward + LPGD central backward.
* ``grid_sweep``: per-item forward time at batch 8 on grids 5x5 .. 40x40 against the raw
  solver (setup + solve) on the same conic data.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

import torch

from benchmarks.raw import RawBaseline, items_of
from benchmarks.suite import SOLVER_ARGS
from cvxlpgd import LPGD, CvxpyLayer
from cvxlpgd.examples import ShortestPath, grid_shortest_path, shortest_path_data

DFL_VARIANTS = ("forward", "lpgd-lower", "lpgd-central")


def _epoch(layer: CvxpyLayer, features: torch.Tensor, costs: torch.Tensor, variant: str, batch: int) -> float:
    """Seconds for one pass over the data (a fresh model each time: the epoch's work is alike)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(features.shape[1], costs.shape[1], dtype=torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gradient = None if variant == "forward" else LPGD(side=variant.removeprefix("lpgd-"))
    t0 = time.perf_counter()
    for lo in range(0, features.shape[0], batch):
        x_feat, c_true = features[lo : lo + batch], costs[lo : lo + batch]
        if gradient is None:
            with torch.no_grad():
                layer(model(x_feat))
            continue
        (flow,) = layer(model(x_feat), gradient=gradient)
        loss = (c_true * flow).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def _path_layer(sp_problem: ShortestPath, solver: str, executor: Executor | None = None) -> CvxpyLayer:
    """The shortest-path layer both timings use: costs in, flow out, the suite's solver settings."""
    return CvxpyLayer(
        sp_problem.problem,
        [sp_problem.cost],
        [sp_problem.flow],
        solver=solver,
        solver_args=SOLVER_ARGS[solver],
        executor=executor,
    )


def dfl_epoch(solver: str, repeats: int, items: int = 1000, batch: int = 32) -> dict[str, float]:
    """Median seconds per epoch of each variant (variants alternate within each repeat)."""
    sp_problem = grid_shortest_path(5)
    features, costs = shortest_path_data(items, len(sp_problem.edges), seed=0)
    with ThreadPoolExecutor(max_workers=1) as pool:
        layer = _path_layer(sp_problem, solver, pool)
        f, c = torch.tensor(features), torch.tensor(costs)
        samples: dict[str, list[float]] = {v: [] for v in DFL_VARIANTS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _epoch(layer, f[:64], c[:64], "lpgd-central", batch)  # warm-up
            for _ in range(repeats):
                for variant in DFL_VARIANTS:
                    samples[variant].append(_epoch(layer, f, c, variant, batch))
    return {v: statistics.median(s) for v, s in samples.items()}


def grid_sweep(
    solver: str, grids: tuple[int, ...], repeats: int, batch: int = 8, log: Callable[[str], None] = print
) -> list[dict]:
    """Per-item forward (ms) and raw build + solve (ms) for each grid size, alternating."""
    results = []
    for grid in grids:
        sp_problem = grid_shortest_path(grid)
        layer = _path_layer(sp_problem, solver)
        _, costs = shortest_path_data(batch, len(sp_problem.edges), seed=grid)
        programs = items_of(layer, costs)
        raw = RawBaseline(solver, SOLVER_ARGS[solver])
        tensor = torch.tensor(costs)
        forward, baseline = [], []
        try:
            for _ in range(repeats + 1):  # the first round warms up
                t0 = time.perf_counter()
                with torch.no_grad():
                    layer(tensor)
                t1 = time.perf_counter()
                raw.solve_build(programs)
                forward.append(t1 - t0)
                baseline.append(time.perf_counter() - t1)
        finally:
            raw.close()
        row = {
            "solver": solver,
            "grid": grid,
            "edges": len(sp_problem.edges),
            "forward_ms": statistics.median(forward[1:]) * 1e3 / batch,
            "raw_ms": statistics.median(baseline[1:]) * 1e3 / batch,
            "ratio": statistics.median(a / b for a, b in zip(forward[1:], baseline[1:], strict=True)),
        }
        log(f"  grid {grid}x{grid} {solver}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
        results.append(row)
    return results
