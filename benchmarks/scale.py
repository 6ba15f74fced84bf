"""Scale sweep: a sparse LP with 10^3 .. 10^5 variables, one fresh subprocess per size.

A fresh process makes the ``ru_maxrss`` delta meaningful (the high-water mark of that
process only) and keeps a blow-up from taking the suite down; its address space is capped.
Measured per size:

* layer construction time (``CvxpyLayer(...)``, CVXPY canonicalization included), no tracing;
* peak memory of construction, two ways: ``ru_maxrss`` delta of the process across the timed
  construction (includes C allocations: CVXPY's C++ canonicalizer, scipy), and the
  ``tracemalloc`` peak of a second construction on a fresh copy of the problem (Python and
  numpy/scipy buffers only);
* per-item forward and LPGD (lower) backward time at batch 1, and the raw solver's setup + solve
  on the same conic data.

``python -m benchmarks.scale N SOLVER`` runs one size and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable

import numpy as np
import torch

RLIMIT_BYTES = 16 * 2**30  # the worker's address-space cap


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(n: int, solver: str, repeats: int) -> dict:
    """Construction, memory and timing of the sparse LP with ``n`` variables."""
    from benchmarks.problems import sparse_lp
    from benchmarks.raw import RawBaseline, items_of
    from benchmarks.suite import SOLVER_ARGS
    from cvxlpgd import LPGD, CvxpyLayer

    bp = sparse_lp(n)
    rows = bp.problem.size_metrics.num_scalar_leq_constr + bp.problem.size_metrics.num_scalar_eq_constr
    result: dict = {
        "n": n,
        "rows": int(rows),
        "solver": solver,
        "title": bp.title,
        "dense_bytes": 8 * n * int(rows),
    }
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    try:
        layer = CvxpyLayer(
            bp.problem, bp.parameters, bp.variables, solver=solver, solver_args=SOLVER_ARGS[solver]
        )
    except BaseException as error:  # noqa: BLE001 - MemoryError included: that is the finding
        result.update(
            build_s=time.perf_counter() - t0,
            rss_delta=_rss_bytes() - rss0,
            error=f"construction failed: {type(error).__name__}: {str(error)[:200]}",
        )
        return result
    result["build_s"] = time.perf_counter() - t0
    result["rss_delta"] = _rss_bytes() - rss0

    fresh = sparse_lp(n)
    tracemalloc.start()
    CvxpyLayer(
        fresh.problem, fresh.parameters, fresh.variables, solver=solver, solver_args=SOLVER_ARGS[solver]
    )
    result["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del fresh

    values = bp.batch(1)
    weight = torch.randn((1, n), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    raw = RawBaseline(solver, SOLVER_ARGS[solver])
    programs = items_of(layer, values[0])
    fwd, bwd, raw_t = [], [], []
    for _ in range(repeats):
        c = torch.tensor(values[0], requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            (x,) = layer(c, gradient=LPGD(side="lower"))
            t1 = time.perf_counter()
            (x * weight).sum().backward()
            t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        raw_t.append(_timed(lambda: raw.solve_build(programs)))
    raw.close()
    result.update(
        forward_s=float(np.median(fwd)),
        backward_s=float(np.median(bwd)),
        raw_s=float(np.median(raw_t)),
        repeats=repeats,
        status=layer.last_statuses[0],
    )
    return result


def _timed(work: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def run_sweep(
    sizes: tuple[int, ...], solver: str, timeout_s: float, log: Callable[[str], None]
) -> list[dict]:
    """Each size in its own ``python -m benchmarks.scale`` subprocess."""
    results = []
    for n in sizes:
        repeats = 3 if n <= 10_000 else 1
        cmd = [sys.executable, "-m", "benchmarks.scale", str(n), solver, str(repeats)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy()
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if lines:
                result = json.loads(lines[-1])
            else:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                result = {"n": n, "solver": solver, "error": f"worker exited {proc.returncode}: {tail[:200]}"}
        except subprocess.TimeoutExpired:
            result = {"n": n, "solver": solver, "error": f"timed out after {timeout_s:.0f} s"}
        result["wall_s"] = time.perf_counter() - t0
        log(
            f"  scale n={n:<7d} {solver}: "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in result.items()
                if k != "title"
            )
        )
        results.append(result)
    return results


def main(argv: list[str]) -> None:
    """Worker entry point: ``N SOLVER [REPEATS]`` -> one JSON line on stdout."""
    n, solver = int(argv[0]), argv[1]
    repeats = int(argv[2]) if len(argv) > 2 else 1
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = RLIMIT_BYTES if hard == resource.RLIM_INFINITY else min(RLIMIT_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    print(json.dumps(measure(n, solver, repeats)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
