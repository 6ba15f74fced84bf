"""Stacked HiGHS solves (``HighsSolver.solve_many``) against one HiGHS run per item.

``python -m benchmarks.stacked [--repeats 7] [--quick]`` prints a markdown table: process CPU
time per item of forward + default-gradient backward (``AdaptiveLPGD``: on an LP, the forward
and two re-solves per item) at batch 32 and 128, with stacking on and off, on the 5 x 5 and
12 x 12 grid shortest paths, the dense LP 50 x 20 and the LP relaxation of PyEPO's 2 x 32
knapsack. Each round times every variant once, in turn; the table holds medians. Both variants
pass the same ``HighsSolver`` object type (one with ``solves_many`` off), so they differ in
nothing else. It decides ``STACK_NNZ_LIMIT`` and ``STACK_MAX_ITEMS`` in cvxlpgd/solvers/highs.py;
``--nnz-limit 100000`` stacks every problem, to see what stacking the larger ones costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import cvxpy as cp
import numpy as np
import torch

from benchmarks.problems import BenchProblem, dense_lp, shortest_path
from cvxlpgd import CvxpyLayer
from cvxlpgd.compile import compile_problem
from cvxlpgd.cone import ConeProgram
from cvxlpgd.program import ConicForm
from cvxlpgd.solvers import highs
from cvxlpgd.solvers.highs import HighsSolver, stack_size

BATCHES = (32, 128)
KNAPSACK_ITEMS, KNAPSACK_DIM, KNAPSACK_CAPACITY = 32, 2, 20.0  # as benchmarks/dfl.py


def knapsack_relaxation(seed: int = 0) -> BenchProblem:
    """max v'x  s.t.  W x <= capacity, 0 <= x <= 1 (PyEPO's knapsack without integrality);
    parameter v."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(3.0, 8.0, (KNAPSACK_DIM, KNAPSACK_ITEMS)).round()
    value = cp.Parameter(KNAPSACK_ITEMS, name="value")
    pick = cp.Variable(KNAPSACK_ITEMS, name="pick")
    capacity = np.full(KNAPSACK_DIM, KNAPSACK_CAPACITY)
    problem = cp.Problem(cp.Maximize(value @ pick), [weights @ pick <= capacity, pick >= 0, pick <= 1])

    def sample(batch: int, rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.uniform(1.0, 10.0, (batch, KNAPSACK_ITEMS))]

    return BenchProblem("knapsack", "knapsack LP 2 x 32", problem, [value], [pick], sample)


def problems() -> list[BenchProblem]:
    return [shortest_path(5), shortest_path(12), dense_lp(), knapsack_relaxation()]


def _backend(stacked: bool) -> HighsSolver:
    solver = HighsSolver({})
    solver.solves_many = stacked
    return solver


def _timer(bp: BenchProblem, stacked: bool, batch: int) -> Callable[[], float]:
    """One forward + backward call of the default gradient; returns its process CPU seconds."""
    layer = CvxpyLayer(bp.problem, bp.parameters, bp.variables, solver=_backend(stacked))
    values = bp.batch(batch, seed=batch)
    gen = torch.Generator().manual_seed(batch)
    weights = [torch.randn((batch, *v.shape), generator=gen, dtype=torch.float64) for v in bp.variables]

    def call() -> float:
        inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
        start = time.process_time()
        outputs = layer(*inputs)
        sum((out * w).sum() for out, w in zip(outputs, weights, strict=True)).backward()
        return time.process_time() - start

    return call


def run(
    repeats: int, log: Callable[[str], None], quick: bool = False, nnz_limit: int | None = None
) -> list[dict]:
    """Per-item medians of both variants for each problem and batch; ``nnz_limit`` replaces
    ``STACK_NNZ_LIMIT`` (to measure the stacking of larger LPs)."""
    if nnz_limit is not None:
        highs.STACK_NNZ_LIMIT = nnz_limit
    rows = []
    for bp in problems():
        for batch in (8,) if quick else BATCHES:
            variants = {stacked: (_timer(bp, stacked, batch), []) for stacked in (True, False)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for round_index in range(repeats + 1):  # round 0 warms up
                    for call, samples in variants.values():
                        elapsed = call()
                        if round_index:
                            samples.append(elapsed)
            ms = {
                stacked: statistics.median(samples) * 1e3 / batch
                for stacked, (_, samples) in variants.items()
            }
            item = _conic_item(bp)
            rows.append(
                {
                    "problem": bp.title,
                    "size": " x ".join(map(str, item.A.shape)),
                    "group": stack_size(item),
                    "batch": batch,
                    "stacked": ms[True],
                    "per item": ms[False],
                    "repeats": repeats,
                }
            )
            log(f"  {bp.title} batch {batch}: stacked {ms[True]:.3f}, per item {ms[False]:.3f} ms/item")
    return rows


def _conic_item(bp: BenchProblem) -> ConeProgram:
    """The conic program of one item of ``bp`` (its problems have one parameter each)."""
    compiled = compile_problem(bp.problem, bp.parameters, bp.variables, ConicForm("CLARABEL", quad_obj=True))
    (theta,) = bp.batch(1)
    return compiled.maps.apply(theta.reshape(1, -1)).item(0)


def render(rows: list[dict]) -> str:
    lines = [
        "## Stacked HiGHS solves",
        "",
        "Process CPU ms per item (median over "
        f"{rows[0]['repeats']} rounds) of forward + default-gradient backward, HiGHS with "
        "`solve_many` (groups of up to `group` items as one block-diagonal model) and with one run "
        "per item; group 0: the problem is above the stacking limit (solved per item either way).",
        "",
        "| problem | rows x cols | group | batch | stacked | per item | stacked / per item |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["stacked"] / r["per item"]
        lines.append(
            f"| {r['problem']} | {r['size']} | {r['group']} | {r['batch']} | {r['stacked']:.3f} | "
            f"{r['per item']:.3f} | {ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="batch 8, one round")
    parser.add_argument("--nnz-limit", type=int, help="stack LPs of up to this many nonzeros in A")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    print(render(run(repeats, log, args.quick, args.nnz_limit)))


if __name__ == "__main__":
    main()
