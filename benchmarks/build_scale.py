"""Build time and memory of layers with large parameter matrices (cvxpylayers #109, #66, #75),
on the direct path for parameter-matrix products and on CVXPY's path, one fresh subprocess per
measurement with its address space capped at 6 GiB.

The problems, written from the issues' descriptions (their code is not public here):

* ``norm`` (#109): minimize ``0.5 ||A x||_2``  s.t.  ``C x = d``; ``A`` an ``n x n`` parameter,
  ``C`` a ``12 x n`` parameter, ``d`` a 12-vector parameter; ``A`` random normal, ``d = C x0``;
* ``factor`` (#66): minimize ``||L' x||^2 - p'x``; ``L = I + 0.3 G / sqrt(n)`` (``G`` normal,
  so ``L L'`` is well conditioned), ``p`` normal;
* ``lp75`` (#75): minimize ``c'x``  s.t.  ``A_ub x <= b_ub``, ``A_eq x = b_eq``, ``0 <= x <= 1``
  with 5643 variables, 313 inequality and 312 equality rows, all five parameters dense
  (3.5 million matrix entries); ``A_ub`` uniform in [0, 1], ``A_eq`` normal, ``b_eq = A_eq x0``,
  ``b_ub = A_ub x0 + slack`` for an interior ``x0``, so the LP is feasible and bounded.

Measured per problem and size: construction CPU and wall time, the peak resident memory of the
worker (``ru_maxrss``) and its growth over the imports; with ``--solve``, one forward and one
backward at batch 1 (the default gradient; ``--gradient lower``: ``LPGD(tau=1, side="lower")``),
and for ``lp75`` CVXPY's own ``problem.solve`` of the same LP with the same solver and settings,
cold (``warm_start=False``; the second solve, whose canonicalization is cached).

``--part lp75`` runs the #75 LP through each of ``LP75_ROUTES`` (solvers, HiGHS's methods,
one-sided LPGD at a large and a small step): forward, backward, CVXPY's own solve, and each
route's solution and gradients against the first route with the same gradient.

    python -m benchmarks.build_scale                    # the sweep, a markdown table
    python -m benchmarks.build_scale --write            # ... also as RESULTS.md's section
    python -m benchmarks.build_scale --part lp75 --write  # the #75 LP's routes, its own section
    python -m benchmarks.build_scale norm 1500 direct --solve CLARABEL   # one worker, JSON lines
    python -m benchmarks.build_scale lp75 5643 direct --solve HIGHS --settings '{"solver": "ipm"}'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cvxpy as cp
import numpy as np

RLIMIT_BYTES = 6 * 2**30
RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Large parameter matrices: build time and memory"
TIMEOUT_S = 600
# Settings passed to both the layer and CVXPY's own solve: the layer's defaults.
SETTINGS = {"SCS": {"eps_abs": 1e-5, "eps_rel": 1e-5}, "CLARABEL": {}, "HIGHS": {}}
# The sweep: (problem, size, solver for the forward/backward or None, gradient).
SWEEP = (
    ("norm", 250, None, "default"),
    ("norm", 500, None, "default"),
    ("norm", 1000, None, "default"),
    ("norm", 1500, "CLARABEL", "default"),
    ("norm", 3000, None, "default"),
    ("factor", 300, None, "default"),
    ("factor", 1000, "CLARABEL", "default"),
    ("lp75", 5643, "HIGHS", "default"),
    ("lp75", 5643, "HIGHS", "lower"),
    ("lp75", 5643, "CLARABEL", "default"),
    ("lp75", 5643, "CLARABEL", "lower"),
    ("lp75", 5643, "SCS", "default"),
)

LP75_HEADING = "## The #75 LP: which solver, forward and backward"


@dataclass(frozen=True)
class Route:
    """One row of ``--part lp75``: a solver with settings and a gradient on the full #75 LP."""

    label: str
    solver: str
    settings: dict = field(default_factory=dict)
    gradient: str = "default"
    cvxpy_solve: bool = False  # also time CVXPY's own solve (once per solver)
    timeout_s: int = TIMEOUT_S


FAER = {"direct_solve_method": "faer", "max_threads": 1}
# The reference of the gradient comparison is the first route with the same gradient.
LP75_ROUTES = (
    Route("HiGHS, defaults (interior point: many dense rows)", "HIGHS", cvxpy_solve=True),
    Route("HiGHS, defaults", "HIGHS", gradient="lower"),
    Route("HiGHS, defaults", "HIGHS", gradient="lower-small"),
    Route("HiGHS interior point everywhere", "HIGHS", {"solver": "ipm"}),
    Route("HiGHS interior point, no crossover", "HIGHS", {"solver": "ipm", "run_crossover": "off"}),
    Route("HiGHS dual simplex, from the basis", "HIGHS", {"solver": "simplex", "simplex_strategy": 1}),
    Route("HiGHS simplex (before: primal from the basis)", "HIGHS", {"solver": "simplex"}, timeout_s=300),
    # Clarabel's default (QDLDL) factorization did not finish a forward in 560 s: faer's does.
    Route("Clarabel", "CLARABEL", FAER, cvxpy_solve=True, timeout_s=300),
    Route("SCS", "SCS", cvxpy_solve=True, timeout_s=300),
)


def _cost_gradient_cosine(mine: Path, reference: Path) -> float:
    """The cosine between two routes' gradients w.r.t. the costs ``c`` (``lp75``'s fifth parameter)."""
    a, b = (np.load(path)["grad4"] for path in (mine, reference))
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _relative_difference(mine: Path, reference: Path) -> tuple[float, float]:
    """(x, all gradients together): |mine - reference| / |reference|."""
    a, b = np.load(mine), np.load(reference)
    grads = sorted(key for key in b.files if key.startswith("grad"))

    def flat(data: np.lib.npyio.NpzFile) -> np.ndarray:
        return np.concatenate([data[key].ravel() for key in grads])

    x = float(np.linalg.norm(a["x"] - b["x"]) / np.linalg.norm(b["x"]))
    return x, float(np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b)))


def lp75_routes(write: bool) -> None:
    """``--part lp75``: every route of ``LP75_ROUTES`` in its own worker, as a markdown table."""
    rows, references = [], {}
    saves = Path(tempfile.mkdtemp(prefix="lp75_"))  # the routes' outputs and gradients
    for route in LP75_ROUTES:
        save = saves / f"{len(rows)}.npz"
        row = run(
            "lp75", 5643, "direct", route.solver, route.gradient,
            route.settings, route.cvxpy_solve, str(save), route.timeout_s,
        )  # fmt: skip
        row["route"], row["settings"] = route, route.settings
        if save.exists():
            reference = references.setdefault(route.gradient, save)
            row["x_difference"], row["gradient_difference"] = _relative_difference(save, reference)
            row["cost_cosine"] = _cost_gradient_cosine(save, saves / "0.npz")
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "route"}), file=sys.stderr, flush=True)
    table = lp75_markdown(rows)
    print(table)
    if write:
        write_lp75_section(table)


GRADIENT_LABELS = {
    "default": "default",
    "lower": 'LPGD(tau=1, side="lower")',
    "lower-small": 'LPGD(tau=0.01, side="lower")',
}


def _ratio(row: dict, numerator: str, denominator: str) -> str:
    return f"{row[numerator] / row[denominator]:.2f}" if numerator in row and denominator in row else ""


def lp75_markdown(rows: list[dict]) -> str:
    lines = [
        "| route | settings | gradient | forward s | backward s | backward / forward | CVXPY solve s "
        "(first, second) | forward / CVXPY second | x vs reference | gradient vs reference "
        "| cost gradient cosine vs first route | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        route: Route = r["route"]
        cvxpy = f"{r['cvxpy_first_cpu_s']:.1f}, {r['cvxpy_cpu_s']:.1f}" if "cvxpy_cpu_s" in r else ""
        cells = [
            route.label,
            ", ".join(f"`{k}={v}`" for k, v in route.settings.items()),
            GRADIENT_LABELS[route.gradient],
            _cell(r, "forward_cpu_s", digits=1),
            _cell(r, "backward_cpu_s", digits=1),
            _ratio(r, "backward_cpu_s", "forward_cpu_s"),
            cvxpy,
            _ratio(r, "forward_cpu_s", "cvxpy_cpu_s"),
            f"{r['x_difference']:.0e}" if "x_difference" in r else "",
            f"{r['gradient_difference']:.0e}" if "gradient_difference" in r else "",
            f"{r['cost_cosine']:.2f}" if "cost_cosine" in r else "",
            r.get("status", r.get("error", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_lp75_section(table: str) -> None:
    text = (
        f"{LP75_HEADING}\n\n`python -m benchmarks.build_scale --part lp75 --write`: the #75 LP at full "
        "size (5643 variables, 313 + 312 parametrized rows), one subprocess per row, batch 1, CPU "
        "seconds (all threads). CVXPY solve: its first and second `problem.solve` with the same "
        "solver and settings (the first includes its canonicalization). x and gradient vs "
        "reference: relative 2-norm differences against the first route with the same gradient (all "
        "five parameters' gradients together); the cosine compares the gradients w.r.t. `c` with the "
        "first route's (the default gradient).\n\n" + table + "\n"
    )
    from benchmarks.report import write_section as write  # not in the measured workers' imports

    write(RESULTS, "build_scale_lp75", text)


Built = tuple[cp.Problem, list[cp.Parameter], list[cp.Variable], list[np.ndarray]]


def norm(n: int, rows: int = 12, seed: int = 0) -> Built:
    rng = np.random.default_rng(seed)
    x, A = cp.Variable(n), cp.Parameter((n, n))
    C, d = cp.Parameter((rows, n)), cp.Parameter(rows)
    problem = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x, 2)), [C @ x == d])
    C_value = rng.standard_normal((rows, n))
    values = [rng.standard_normal((n, n)), C_value, C_value @ rng.standard_normal(n)]
    return problem, [A, C, d], [x], values


def factor(n: int, seed: int = 0) -> Built:
    rng = np.random.default_rng(seed)
    x, L, p = cp.Variable(n), cp.Parameter((n, n)), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(L.T @ x) - p.T @ x))
    values = [np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n), rng.standard_normal(n)]
    return problem, [L, p], [x], values


def lp75(n: int, m_ub: int = 313, m_eq: int = 312, seed: int = 0) -> Built:
    rng = np.random.default_rng(seed)
    x = cp.Variable(n)
    A_ub, b_ub = cp.Parameter((m_ub, n)), cp.Parameter(m_ub)
    A_eq, b_eq = cp.Parameter((m_eq, n)), cp.Parameter(m_eq)
    c = cp.Parameter(n)
    constraints = [A_ub @ x <= b_ub, A_eq @ x == b_eq, x >= 0, x <= 1]
    problem = cp.Problem(cp.Minimize(c @ x), constraints)
    x0 = rng.uniform(0.2, 0.8, n)
    G, H = rng.uniform(0.0, 1.0, (m_ub, n)), rng.standard_normal((m_eq, n))
    values = [G, G @ x0 + rng.uniform(0.1, 1.0, m_ub), H, H @ x0, rng.standard_normal(n)]
    return problem, [A_ub, b_ub, A_eq, b_eq, c], [x], values


PROBLEMS: dict[str, Callable[[int], Built]] = {"norm": norm, "factor": factor, "lp75": lp75}


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _timed(work: Callable[[], object]) -> tuple[object, float, float]:
    """``work()``, its CPU time (all threads) and its wall time."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _gradient_method(gradient: str) -> object:
    """The layer's ``gradient`` argument for the worker's ``--gradient`` choice."""
    from cvxlpgd import LPGD

    if gradient == "default":
        return "lpgd"
    return LPGD(tau=1.0 if gradient == "lower" else 0.01, side="lower")


def measure(
    name: str,
    n: int,
    path: str,
    solver: str | None,
    gradient: str,
    settings: dict | None = None,
    cvxpy_solve: bool = True,
    save: str | None = None,
    batch: int = 1,
) -> dict:
    """One worker's measurements (see the module docstring); prints the results so far after
    the build and after the forward (a timed-out worker still reports them). ``settings`` go
    over the layer's defaults, for the layer and CVXPY's own solve; ``save``: a ``.npz`` file
    for the output and the gradients; ``batch``: that many copies of the item."""
    import torch

    from cvxlpgd import CvxpyLayer, matrix_products

    if path == "cvxpy":
        matrix_products.MIN_ENTRIES = sys.maxsize
    problem, parameters, variables, values = PROBLEMS[name](n)
    result: dict = {"problem": name, "n": n, "path": path, "entries": sum(p.size for p in parameters)}
    imports = _peak_bytes()
    build_solver = solver or "SCS"
    solver_args = {**SETTINGS[build_solver], **(settings or {})}
    try:
        layer, result["build_cpu_s"], result["build_wall_s"] = _timed(
            lambda: CvxpyLayer(
                problem,
                parameters,
                variables,
                solver=build_solver,
                solver_args=solver_args,
                gradient=_gradient_method(gradient),
            )
        )
    except MemoryError as error:  # the finding on CVXPY's path: report it, do not crash the sweep
        result.update(error=f"MemoryError: {str(error)[:120]}", peak_bytes=_peak_bytes())
        return result
    result.update(peak_bytes=_peak_bytes(), growth_bytes=_peak_bytes() - imports)
    if solver is None:
        return result
    print(json.dumps(result), flush=True)
    # A batch of copies of the one item (the solver's work per item is then the same).
    tensors = [torch.tensor(np.stack([v] * batch) if batch > 1 else v, requires_grad=True) for v in values]
    weight = torch.tensor(np.random.default_rng(1).standard_normal(variables[0].shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inaccurate-solve warnings: the status is reported
        (x,), result["forward_cpu_s"], result["forward_wall_s"] = _timed(lambda: layer(*tensors))
        result.update(solver=solver, gradient=gradient, status=layer.last_statuses[0])
        if name == "lp75" and cvxpy_solve:
            for p, v in zip(parameters, values, strict=True):
                p.value = v
            # warm_start=False: CVXPY would otherwise start HiGHS from its previous solution.
            solve = lambda: problem.solve(solver=solver, warm_start=False, **solver_args)  # noqa: E731
            _, result["cvxpy_first_cpu_s"], result["cvxpy_first_wall_s"] = _timed(solve)
            _, result["cvxpy_cpu_s"], result["cvxpy_wall_s"] = _timed(solve)
            result["max_abs_x_difference"] = float(np.abs(x.detach().numpy() - variables[0].value).max())
        result["batch"] = batch
        print(json.dumps(result), flush=True)
        _, result["backward_cpu_s"], result["backward_wall_s"] = _timed(lambda: (x @ weight).sum().backward())
    if save is not None:
        np.savez(save, x=x.detach().numpy(), **{f"grad{k}": t.grad.numpy() for k, t in enumerate(tensors)})
    return result


def run(
    name: str,
    n: int,
    path: str,
    solver: str | None,
    gradient: str,
    settings: dict | None = None,
    cvxpy_solve: bool = True,
    save: str | None = None,
    timeout_s: int = TIMEOUT_S,
) -> dict:
    """``measure`` in a fresh ``python -m benchmarks.build_scale`` worker."""
    command = [sys.executable, "-m", "benchmarks.build_scale", name, str(n), path, "--gradient", gradient]
    command += ["--solve", solver] if solver else []
    command += ["--settings", json.dumps(settings)] if settings else []
    command += [] if cvxpy_solve else ["--no-cvxpy"]
    command += ["--save", save] if save else []
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy()
        )
        stdout, returncode = done.stdout, done.returncode
    except subprocess.TimeoutExpired as timeout:
        stdout, returncode = (timeout.stdout or b"").decode(), None
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if lines:
        result = json.loads(lines[-1])
        if returncode is None:
            stage = "backward" if "forward_cpu_s" in result else "forward"
            result["status"] = f"timed out after {timeout_s} s ({stage})"
        return result
    if returncode is None:
        return {"problem": name, "n": n, "path": path, "error": f"timed out after {timeout_s} s"}
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"problem": name, "n": n, "path": path, "error": f"worker exited {done.returncode}: {tail[:160]}"}


def _cell(row: dict, key: str, scale: float = 1.0, digits: int = 2) -> str:
    return f"{row[key] / scale:.{digits}f}" if key in row else ""


def markdown(rows: list[dict]) -> str:
    lines = [
        "| problem | n | parameter entries | path | build CPU s | build wall s | peak RSS GiB | growth GiB "
        "| solver | gradient | forward s | backward s | CVXPY solve s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gib = float(2**30)
        cells = [
            r["problem"],
            str(r["n"]),
            f"{r.get('entries', 0):,}",
            r["path"],
            _cell(r, "build_cpu_s"),
            _cell(r, "build_wall_s"),
            _cell(r, "peak_bytes", gib),
            _cell(r, "growth_bytes", gib),
            r.get("solver", ""),
            r.get("gradient", ""),
            _cell(r, "forward_cpu_s"),
            _cell(r, "backward_cpu_s"),
            _cell(r, "cvxpy_cpu_s"),
            r.get("status", r.get("error", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_section(table: str) -> None:
    """Replace (or append) this sweep's section of RESULTS.md, keeping the rest of the file."""
    text = (
        f"{HEADING}\n\n`python -m benchmarks.build_scale --write`: one subprocess per row, address space "
        "capped at 6 GiB; CPU seconds (all threads); forward and backward (default gradient) at "
        "batch 1; CVXPY solve: its second `problem.solve` of the same LP with the same solver and "
        "settings.\n\n" + table + "\n"
    )
    from benchmarks.report import write_section as write  # not in the measured workers' imports

    write(RESULTS, "build_scale", text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("problem", nargs="?", choices=sorted(PROBLEMS), help="worker mode: one measurement")
    parser.add_argument("n", nargs="?", type=int)
    parser.add_argument("path", nargs="?", choices=("direct", "cvxpy"), default="direct")
    parser.add_argument("--solve", help="also time a forward and backward with this solver")
    parser.add_argument(
        "--gradient",
        choices=("default", "lower", "lower-small"),
        default="default",
        help='"lower": LPGD(tau=1, side="lower"); "lower-small": LPGD(tau=0.01, side="lower")',
    )
    parser.add_argument("--settings", type=json.loads, help="worker mode: solver settings, as JSON")
    parser.add_argument("--no-cvxpy", action="store_true", help="worker mode: skip CVXPY's own solve")
    parser.add_argument("--save", help="worker mode: a .npz file for the output and the gradients")
    parser.add_argument("--batch", type=int, default=1, help="worker mode: copies of the item per call")
    parser.add_argument(
        "--part", choices=("build", "lp75"), default="build", help="sweep mode: which sweep (see above)"
    )
    parser.add_argument("--paths", nargs="+", default=["direct", "cvxpy"], help="sweep mode: the paths")
    parser.add_argument("--write", action="store_true", help="sweep mode: also write RESULTS.md's section")
    args = parser.parse_args(argv)
    if args.problem is not None:
        resource.setrlimit(resource.RLIMIT_AS, (RLIMIT_BYTES, resource.getrlimit(resource.RLIMIT_AS)[1]))
        cvxpy_solve = not args.no_cvxpy
        result = measure(
            args.problem, args.n, args.path, args.solve, args.gradient, args.settings, cvxpy_solve, args.save,
            args.batch,
        )  # fmt: skip
        print(json.dumps(result), flush=True)
        return
    if args.part == "lp75":
        lp75_routes(args.write)
        return
    rows, built_on_cvxpys_path = [], set()
    for name, n, solver, gradient in SWEEP:
        for path in args.paths:
            # CVXPY's path: the build only, once per problem and size, not at n = 3000.
            if path == "cvxpy":
                if n == 3000 or (name, n) in built_on_cvxpys_path:
                    continue
                built_on_cvxpys_path.add((name, n))
            rows.append(run(name, n, path, solver if path == "direct" else None, gradient))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.write:
        write_section(table)


if __name__ == "__main__":
    main()
