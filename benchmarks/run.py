"""Entry point: ``python -m benchmarks.run [--quick] [--output PATH] [--no-scale] ...`` (``make bench``).

Full run: problems a-e x {SCS, Clarabel} x batch {1, 16, 128}, then the scale sweep
(10^3, 10^4, 10^5 variables), then HiGHS against both on the LPs (``benchmarks/highs.py``),
written to benchmarks/RESULTS.md and RESULTS.json (HiGHS's table in the markdown only).
``--quick``: batches {1, 4}, one repeat, scale 10^3 only; prints the report (or writes --output).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from benchmarks import highs
from benchmarks.problems import all_problems
from benchmarks.report import render, write_section
from benchmarks.scale import run_sweep
from benchmarks.suite import Row, load_peer, run_problem
from benchmarks.training import dfl_epoch, grid_sweep

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fast smoke run (about a minute)")
    parser.add_argument(
        "--output", type=Path, help="markdown path (default: benchmarks/RESULTS.md; quick: stdout)"
    )
    parser.add_argument("--problems", nargs="*", help="subset of problem keys: lp qp sparsemax socp path")
    parser.add_argument("--solvers", nargs="*", default=["SCS", "CLARABEL"])
    parser.add_argument(
        "--batches",
        nargs="*",
        type=int,
        help="batch sizes (default: 1 16 128; quick: 1 4), e.g. 1 for the batch-1 table",
    )
    parser.add_argument("--no-scale", action="store_true", help="skip the scale sweep")
    parser.add_argument("--no-highs", action="store_true", help="skip HiGHS vs Clarabel and SCS on the LPs")
    parser.add_argument("--no-training", action="store_true", help="skip the DFL epoch and grid sweep")
    parser.add_argument("--scale-solver", default="CLARABEL", help="solver of the scale sweep")
    parser.add_argument(
        "--call-budget",
        type=float,
        default=10.0,
        help="skip a variant at a batch size when one call is estimated above this (s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the suite and write the report."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    batches = tuple(args.batches or ((1, 4) if args.quick else (1, 16, 128)))
    repeats = {b: 1 if args.quick else 5 if b <= 16 else 3 for b in batches}
    sizes = (1_000,) if args.quick else (1_000, 10_000, 100_000)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    peer_cls, peer_version = load_peer()
    peer_note = "" if peer_cls else f"cvxpylayers {peer_version}: its columns are empty."
    log(f"cvxpylayers: {peer_version}")

    problems = [p for p in all_problems() if not args.problems or p.key in args.problems]
    rows: list[Row] = []
    for bp in problems:
        for solver in args.solvers:
            rows += run_problem(bp, solver.upper(), batches, repeats, args.call_budget, peer_cls, log)
    scale = (
        []
        if args.no_scale
        else run_sweep(sizes, args.scale_solver.upper(), 240.0 if not args.quick else 60.0, log)
    )

    highs_rows = [] if args.no_highs else highs.run(1 if args.quick else 3, log, args.quick)
    dfl: dict[str, dict[str, float]] = {}
    grids: list[dict] = []
    if not args.no_training:
        for solver in args.solvers:
            dfl[solver.upper()] = dfl_epoch(solver.upper(), repeats=1 if args.quick else 2)
            log(f"  dfl epoch {solver}: {dfl[solver.upper()]}")
        for solver in args.solvers:
            grids += grid_sweep(
                solver.upper(), (5, 10) if args.quick else (5, 10, 20, 40), 1 if args.quick else 3, log=log
            )

    given = sys.argv[1:] if argv is None else argv
    command = "python -m benchmarks.run " + " ".join(given) if given else "make bench"
    meta = {
        "command": command,
        "wall_s": time.perf_counter() - t0,
        "repeats": repeats,
        "peer_note": peer_note,
    }
    text = render(rows, scale, {p.key: p.title for p in problems}, meta, dfl, grids)
    if highs_rows:
        text += "\n" + highs.render(highs_rows)
    output = args.output or (None if args.quick else HERE / "RESULTS.md")
    if output is None:
        print(text)
        return
    write_section(output, "suite", text)
    output.with_suffix(".json").write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": [dataclasses.asdict(r) for r in rows],
                "scale": scale,
                "dfl": dfl,
                "grids": grids,
            },
            indent=1,
        )
    )
    log(f"wrote {output} ({meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
