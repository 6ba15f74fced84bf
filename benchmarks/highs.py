"""HiGHS against Clarabel and SCS on the LPs: forward and one-sided LPGD backward, per item.

``python -m benchmarks.highs [--batch 32] [--repeats 5]`` prints a markdown table; ``make bench``
appends it to RESULTS.md (``benchmarks.run``). The LPs: problem a) (dense 50 x 20) and the
shortest path of problem e) on 5 x 5, 12 x 12 and 40 x 40 grids. Every repeat times each solver
once, in turn, so drifts of a shared machine hit all three alike. The backward is
``LPGD(tau=1, side="lower")``: one perturbed re-solve per item, warm-started from the item's
forward basis with HiGHS. Target: backward at most 0.3x the forward with HiGHS.
"""

from __future__ import annotations

import argparse
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
GRADIENT = LPGD(tau=1.0, side="lower")


def lp_problems() -> list[BenchProblem]:
    return [dense_lp(), shortest_path(5), shortest_path(12), shortest_path(40)]


def _timer(bp: BenchProblem, solver: str, batch: int) -> tuple[Callable[[Samples | None], None], Samples]:
    layer = CvxpyLayer(
        bp.problem, bp.parameters, bp.variables, solver=solver, gradient=GRADIENT, solver_args=ARGS[solver]
    )
    values = bp.batch(batch, seed=batch)
    gen = torch.Generator().manual_seed(batch)
    weights = [torch.randn((batch, *v.shape), generator=gen, dtype=torch.float64) for v in bp.variables]
    samples = Samples()
    return lambda s: time_layer(layer, values, weights, s), samples


def run(batch: int, repeats: int, log: Callable[[str], None]) -> list[dict]:
    """Per-item medians (ms) for each LP and solver."""
    rows = []
    for bp in lp_problems():
        timers = {solver: _timer(bp, solver, batch) for solver in SOLVERS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for round_index in range(repeats + 1):  # round 0 warms up
                for call, samples in timers.values():
                    call(samples if round_index else None)
        for solver, (_, samples) in timers.items():
            med = samples.per_item_ms(batch)
            rows.append({"problem": bp.title, "solver": solver, "forward": med["forward"],
                         "backward": med["backward"], "repeats": len(samples.forward)})
        log("  " + bp.title + ": " + ", ".join(
            f"{r['solver']} {r['forward']:.3f}+{r['backward']:.3f}" for r in rows[-len(SOLVERS):]
        ))
    return rows


def render(rows: list[dict], batch: int) -> str:
    """The markdown section: per problem, forward and backward per solver, backward/forward ratio."""
    head = "| problem | " + " | ".join(f"{s} fwd | {s} bwd | {s} bwd/fwd" for s in SOLVERS) + " |"
    lines = [
        "## HiGHS on the LPs",
        "",
        f"Batch {batch}, ms per item (median of {rows[0]['repeats']} calls / batch), "
        f"`{GRADIENT!r}`; settings as above, HiGHS defaults. Target: HiGHS bwd/fwd <= {TARGET}.",
        "",
        head,
        "|---" * (1 + 3 * len(SOLVERS)) + "|",
    ]
    for title in dict.fromkeys(r["problem"] for r in rows):
        cells = []
        for solver in SOLVERS:
            r = next(r for r in rows if r["problem"] == title and r["solver"] == solver)
            cells += [f"{r['forward']:.3f}", f"{r['backward']:.3f}", f"{r['backward'] / r['forward']:.2f}"]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = run(args.batch, args.repeats, lambda text: print(text, file=sys.stderr, flush=True))
    print(render(rows, args.batch))


if __name__ == "__main__":
    main()
