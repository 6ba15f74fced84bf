"""HiGHS against Clarabel and SCS on the LPs: forward and one-sided LPGD backward, per item.

``python -m benchmarks.highs [--repeats 3] [--quick]`` prints a markdown table (about 2 minutes
on 2 shared cores); ``make bench`` appends it to RESULTS.md (``benchmarks.run``). The LPs:
problem a) (dense 50 x 20) and the shortest path of problem e) on 5 x 5, 12 x 12 and 40 x 40
grids. Every round times each variant once, in turn, so drifts of a shared machine hit all alike.
The backward is ``LPGD(tau, side="lower")``: one perturbed re-solve per item, which HiGHS starts
from the item's forward basis. Target: backward at most 0.3x the forward with HiGHS.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from collections.abc import Callable

import torch

from benchmarks.problems import BenchProblem, dense_lp, shortest_path
from benchmarks.suite import SOLVER_ARGS
from benchmarks.timing import Samples, time_layer
from cvxlpgd import LPGD, CvxpyLayer

SOLVERS = ("HIGHS", "CLARABEL", "SCS")
ARGS = {**SOLVER_ARGS, "HIGHS": {}}
TARGET = 0.3  # HiGHS one-sided LPGD backward / HiGHS forward
# The incoming gradient is a standard normal weight, as in the main suite: with tau = 1 the cost
# perturbation is as large as the costs (the regime of training, where tau ~ |c| / |dx|), with
# tau = 0.1 it is a tenth of them.
TAUS = (1.0, 0.1)


def lp_problems() -> list[tuple[BenchProblem, int]]:
    """The LPs and the batch size each is timed at (the 40 x 40 grid takes 0.1-0.4 s an item)."""
    return [(dense_lp(), 32), (shortest_path(5), 32), (shortest_path(12), 32), (shortest_path(40), 4)]


def _timer(bp: BenchProblem, solver: str, batch: int, tau: float) -> Callable[[Samples | None], None]:
    gradient = LPGD(tau=tau, side="lower")
    layer = CvxpyLayer(
        bp.problem, bp.parameters, bp.variables, solver=solver, gradient=gradient, solver_args=ARGS[solver]
    )
    values = bp.batch(batch, seed=batch)
    gen = torch.Generator().manual_seed(batch)
    weights = [torch.randn((batch, *v.shape), generator=gen, dtype=torch.float64) for v in bp.variables]
    return lambda s: time_layer(layer, values, weights, s)


def run(repeats: int, log: Callable[[str], None], quick: bool = False) -> list[dict]:
    """Per-item medians (ms) for each LP, solver and tau; every round times each variant once."""
    rows = []
    for bp, batch in lp_problems():
        batch = min(batch, 8) if quick else batch
        variants = {(s, tau): (_timer(bp, s, batch, tau), Samples()) for s in SOLVERS for tau in TAUS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for round_index in range(repeats + 1):  # round 0 warms up
                for call, samples in variants.values():
                    call(samples if round_index else None)
        for solver in SOLVERS:
            forward = [t for tau in TAUS for t in variants[solver, tau][1].forward]
            row = {
                "problem": bp.title,
                "solver": solver,
                "batch": batch,
                "repeats": repeats,
                "forward": statistics.median(forward) * 1e3 / batch,
            }
            for tau in TAUS:
                row[tau] = variants[solver, tau][1].per_item_ms(batch)["backward"]
            rows.append(row)
        log(
            "  "
            + bp.title
            + ": "
            + ", ".join(
                f"{r['solver']} {r['forward']:.3f} fwd, " + "/".join(f"{r[t]:.3f}" for t in TAUS) + " bwd"
                for r in rows[-len(SOLVERS) :]
            )
        )
    return rows


def render(rows: list[dict]) -> str:
    """The markdown section: per problem and solver, forward, backward per tau, and their ratios."""
    taus = " | ".join(f"bwd tau={t:g} | ratio" for t in TAUS)
    lines = [
        "## HiGHS on the LPs",
        "",
        "ms per item (median call time / batch, over "
        f'{rows[0]["repeats"]} rounds), forward and `LPGD(tau, side="lower")` backward (one re-solve '
        "per item) with a standard normal incoming gradient; ratio = backward / forward. Settings as "
        f"above, HiGHS defaults. Target: HiGHS ratio <= {TARGET}.",
        "",
        f"| problem | batch | solver | forward | {taus} |",
        "|---|---|---|---|" + "---|---|" * len(TAUS),
    ]
    for r in rows:
        cells = [f"{r[t]:.3f} | {r[t] / r['forward']:.2f}" for t in TAUS]
        lines.append(
            f"| {r['problem']} | {r['batch']} | {r['solver']} | {r['forward']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batches of at most 8, one round")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    print(render(run(repeats, lambda text: print(text, file=sys.stderr, flush=True), args.quick)))


if __name__ == "__main__":
    main()
