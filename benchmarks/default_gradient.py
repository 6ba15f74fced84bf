"""Which backward pass should ``gradient="lpgd"`` mean? Candidates side by side on five measures.

  core     relative gradient error per parameter vs central finite differences (and vs
           gradient="implicit") on the five smooth core problems (tests/problems.py)
  readme   cvxpylayers' README example, 100 seeds: failed backward calls, cosine to implicit
  nonzero  fraction of items with a non-zero cost gradient on shortest-path and dense-LP layers
  smooth   Jacobians of projections (box, simplex, ball; written as sum_squares(x - a) and as
           0.5 |x|^2 - a'x) and of a QP with inactive constraints against the exact ones, at
           SCS's and Clarabel's default and tight tolerances, next to gradient="implicit"
  demo     held-out regret of ``make demo``'s training (cvxlpgd/demo.py)

Decision-focused learning on PyEPO's data (regret against SPO+ and PFYL) is benchmarks/dfl.py.
Run from the repository root, e.g. (the small version):
  python -m benchmarks.default_gradient --parts core smooth readme nonzero demo
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch

from cvxlpgd import LPGD, AdaptiveLPGD, CvxpyLayer
from cvxlpgd.demo import demo_data
from cvxlpgd.demo import train as demo_train
from cvxlpgd.examples import grid_shortest_path, shortest_path_data
from tests.problems import SmoothCase, finite_difference, smooth_cases

CANDIDATES: dict[str, AdaptiveLPGD | LPGD] = {
    "LPGD(tau=1)": LPGD(tau=1.0),
    "small step only": AdaptiveLPGD(large=None),
    "lower side only": AdaptiveLPGD(large_upper=None),
    "default": AdaptiveLPGD(),
}
TIGHT = {"CLARABEL": {"eps": 1e-12}, "SCS": {"eps": 1e-11, "max_iters": 200_000}}
Table = list[dict[str, object]]


@contextmanager
def recorded() -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings instead of printing them (the tables count them)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record


# ---------------------------------------------------------------- core: exactness on smooth problems
def _relative(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def _gradients(
    case: SmoothCase, gradient: object, solver: str, weights: list[torch.Tensor]
) -> list[np.ndarray]:
    """Gradient of sum(weights * outputs) w.r.t. each parameter, at tight tolerances."""
    layer = CvxpyLayer(case.problem, case.params, case.outputs, solver=solver, solver_args=TIGHT[solver])
    tensors = [torch.tensor(v, requires_grad=True) for v in case.values]
    with recorded():
        outs = layer(*tensors, gradient=gradient)
        sum((o * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
    return [t.grad.numpy() for t in tensors]


def core(solvers: list[str]) -> Table:
    rows = []
    for case in smooth_cases():
        # SCS: Clarabel's exponential-cone solutions are accurate to ~1e-7 only, noise that
        # finite differences with step 1e-6 turn into 10% errors.
        reference = CvxpyLayer(
            case.problem, case.params, case.outputs, solver="SCS", solver_args=TIGHT["SCS"]
        )
        rng = np.random.default_rng(0)
        with torch.no_grad(), recorded():
            shapes = [o.shape for o in reference(*[torch.tensor(v) for v in case.values])]
        weights = [torch.tensor(rng.standard_normal(s)) for s in shapes]

        def loss(values: list[np.ndarray], weights=weights, reference=reference) -> float:
            with torch.no_grad(), recorded():
                outs = reference(*[torch.tensor(v) for v in values])
            return float(sum((o * w).sum() for o, w in zip(outs, weights, strict=True)))

        fds = [
            finite_difference(loss, case.values, k, bool(p.attributes["PSD"]))
            for k, p in enumerate(case.params)
        ]
        implicit = _gradients(case, "implicit", "SCS", weights) if case.implicit else None
        for solver in solvers:
            for name, gradient in CANDIDATES.items():
                grads = _gradients(case, gradient, solver, weights)
                errors = {
                    p.name(): _relative(g, fd) for p, g, fd in zip(case.params, grads, fds, strict=True)
                }
                rows.append(
                    {
                        "problem": case.name,
                        "solver": solver,
                        "method": name,
                        "error per parameter": ", ".join(f"{k} {v:.1e}" for k, v in errors.items()),
                        "max vs FD": max(errors.values()),
                        "max vs implicit": max(map(_relative, grads, implicit)) if implicit else None,
                    }
                )
        if implicit:
            errors = [_relative(g, fd) for g, fd in zip(implicit, fds, strict=True)]
            rows.append(
                {"problem": case.name, "solver": "SCS", "method": "implicit", "max vs FD": max(errors)}
            )
    return rows


# ---------------------------------------------------------------- smooth: Jacobians against exact ones
@dataclass(frozen=True)
class JacobianCase:
    """A one-parameter layer problem with its exact Jacobian d x / d parameter at ``value``."""

    name: str
    problem: cp.Problem
    param: cp.Parameter
    x: cp.Variable
    value: np.ndarray
    exact: np.ndarray


def _box(n: int, value: np.ndarray, written: str, where: str) -> JacobianCase:
    x, a = cp.Variable(n), cp.Parameter(n)
    objective = cp.sum_squares(x - a) if written == "sum_squares" else 0.5 * cp.sum_squares(x) - a @ x
    problem = cp.Problem(cp.Minimize(objective), [x >= 0, x <= 1])
    exact = np.diag(((value > 0) & (value < 1)).astype(float))
    return JacobianCase(f"box, {written}, a {where}", problem, a, x, value, exact)


def _simplex(n: int, value: np.ndarray, written: str, where: str) -> JacobianCase:
    x, a = cp.Variable(n), cp.Parameter(n)
    objective = cp.sum_squares(x - a) if written == "sum_squares" else 0.5 * cp.sum_squares(x) - a @ x
    problem = cp.Problem(cp.Minimize(objective), [x >= 0, cp.sum(x) == 1])
    u = np.sort(value)[::-1]
    cumulative = np.cumsum(u) - 1.0
    k = np.nonzero(u - cumulative / np.arange(1, n + 1) > 0)[0][-1] + 1
    support = (value - cumulative[k - 1] / k) > 0
    exact = np.zeros((n, n))
    exact[np.ix_(support, support)] = np.eye(support.sum()) - 1.0 / support.sum()
    return JacobianCase(f"simplex, {written}, a {where}", problem, a, x, value, exact)


def _ball(n: int, value: np.ndarray, written: str, where: str) -> JacobianCase:
    x, a = cp.Variable(n), cp.Parameter(n)
    objective = cp.sum_squares(x - a) if written == "sum_squares" else 0.5 * cp.sum_squares(x) - a @ x
    problem = cp.Problem(cp.Minimize(objective), [cp.norm(x) <= 1])
    r = np.linalg.norm(value)
    exact = np.eye(n) if r < 1 else (np.eye(n) - np.outer(value, value) / r**2) / r
    return JacobianCase(f"ball, {written}, a {where}", problem, a, x, value, exact)


def _inactive_qp(n: int = 4, m: int = 3) -> JacobianCase:
    """d x / d h of a QP whose constraints are all inactive: exactly zero."""
    rng = np.random.default_rng(3)
    F = rng.standard_normal((n, n))
    Q = F @ F.T + np.eye(n)
    G, q = rng.standard_normal((m, n)), rng.standard_normal(n)
    x, h = cp.Variable(n), cp.Parameter(m)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x), [G @ x <= h])
    value = G @ np.linalg.solve(Q, -q) + rng.uniform(0.05, 0.2, m)
    return JacobianCase("QP inactive, d x/d h", problem, h, x, value, np.zeros((n, m)))


def jacobian_cases() -> list[JacobianCase]:
    rng = np.random.default_rng(7)
    n = 6
    inside = rng.uniform(0.1, 0.9, n)  # feasible: c = 0 and P x* ~ 0 in CVXPY's sum_squares form
    outside = inside.copy()
    outside[:2] = [-0.5, 1.5]
    on_simplex = rng.dirichlet(np.ones(n))
    near_simplex = on_simplex + rng.uniform(-0.05, 0.05, n)
    in_ball, out_ball = 0.3 * rng.standard_normal(n) / np.sqrt(n), 2.0 * rng.standard_normal(n)
    cases = [_inactive_qp()]
    for written in ("sum_squares", "linear"):
        cases += [_box(n, inside, written, "feasible"), _box(n, outside, written, "outside")]
        cases += [_simplex(n, on_simplex, written, "feasible"), _simplex(n, near_simplex, written, "near")]
        cases += [_ball(n, in_ball, written, "feasible"), _ball(n, out_ball, written, "outside")]
    return cases


def smooth(solvers: list[str]) -> Table:
    """max |J - J_exact| / max(1, |J_exact|) and max |J| where J_exact is 0, at the solvers'
    default and tight tolerances; plus the relative errors of the five core problems (``core``)."""
    rows = []
    for case in jacobian_cases():
        for solver in solvers:
            for tolerance, args in (("default", {}), ("tight", TIGHT[solver])):
                row: dict[str, object] = {"problem": case.name, "solver": solver, "tolerances": tolerance}
                for name, gradient in {"default": AdaptiveLPGD(), "implicit": "implicit"}.items():
                    layer = CvxpyLayer(case.problem, [case.param], [case.x], solver=solver, solver_args=args)
                    with recorded():
                        J = torch.autograd.functional.jacobian(
                            lambda t, layer=layer, g=gradient: layer(t, gradient=g)[0],
                            torch.tensor(case.value),
                        ).numpy()
                    zero = case.exact == 0
                    scale = max(1.0, np.abs(case.exact).max())
                    row[f"{name} max error"] = float(np.abs(J - case.exact).max() / scale)
                    row[f"{name} max on zeros"] = float(np.abs(J[zero]).max(initial=0.0))
                rows.append(row)
    return rows


# ---------------------------------------------------------------- readme: cvxpylayers' README example
def readme(solver: str, seeds: int) -> Table:
    n, m = 2, 3
    x, A, b = cp.Variable(n), cp.Parameter((m, n)), cp.Parameter(m)
    problem = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1)), [x >= 0])
    layer = CvxpyLayer(problem, [A, b], [x], solver=solver)
    # Whether the true derivative is non-zero: implicit at Clarabel eps=1e-12 (|grad| is either
    # < 2e-12 or > 0.1 on these seeds; at default tolerances, zero derivatives read as noise).
    exact = CvxpyLayer(problem, [A, b], [x], solver="CLARABEL", solver_args=TIGHT["CLARABEL"])
    informative = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        A_t, b_t = torch.randn(m, n, requires_grad=True), torch.randn(m, requires_grad=True)
        exact(A_t, b_t, gradient="implicit")[0].sum().backward()
        informative.append(float(torch.cat([A_t.grad.ravel(), b_t.grad.ravel()]).norm()) > 1e-6)
    rows = []
    for name, gradient in {**CANDIDATES, "LPGD(tau=0.01)": LPGD(tau=0.01)}.items():
        failures = warned = 0
        cosines = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            A_t, b_t = torch.randn(m, n, requires_grad=True), torch.randn(m, requires_grad=True)
            grads = []
            for g in ("implicit", gradient):
                A_t.grad = b_t.grad = None
                try:
                    with recorded() as record:
                        layer(A_t, b_t, gradient=g)[0].sum().backward()
                except RuntimeError:
                    failures += 1
                    break
                warned += bool(record) and g != "implicit"
                grads.append(torch.cat([A_t.grad.ravel(), b_t.grad.ravel()]).double())
            if len(grads) == 2 and informative[seed]:
                cosines.append(float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm() + 1e-300)))
        cos = np.array(cosines)
        rows.append(
            {
                "method": name,
                "failures": failures,
                "warned calls": warned,
                "derivative non-zero": cos.size,
                "cos>=0.99": int((cos >= 0.99).sum()),
                "median cos": float(np.median(cos)) if cos.size else None,
            }
        )
    return rows


# ---------------------------------------------------------------- nonzero: informative cost gradients on LPs
def dense_lp_problem(n: int = 50, m: int = 20, seed: int = 0) -> tuple[cp.Problem, cp.Parameter, cp.Variable]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    b = A @ rng.uniform(0.0, 1.0, n) + rng.uniform(0.1, 1.0, m)
    x, c = cp.Variable(n), cp.Parameter(n)
    return cp.Problem(cp.Minimize(c @ x), [A @ x <= b, x >= 0, x <= 1]), c, x


def nonzero_fraction(grad: torch.Tensor, weight: torch.Tensor, cost: torch.Tensor) -> float:
    """Fraction of items whose cost gradient exceeds 1e-6 of its natural scale |dx| / |c|
    (the size of d(w'x)/dc when x moves by O(1) as c moves by O(|c|)); below is solver noise."""
    scale = weight.norm(dim=1) / cost.norm(dim=1)
    return float((grad.norm(dim=1) > 1e-6 * scale).double().mean())


def nonzero(batch: int, grid: int) -> Table:
    path = grid_shortest_path(grid)
    lp, c_lp, x_lp = dense_lp_problem()
    rng = np.random.default_rng(0)
    _, true_costs = shortest_path_data(batch, len(path.edges), seed=1)
    settings = {
        "shortest path": (
            path.problem,
            path.cost,
            path.flow,
            true_costs + rng.standard_normal(true_costs.shape),
            rng.uniform(0.0, 2.0, true_costs.shape),
        ),
        "dense LP": (lp, c_lp, x_lp, rng.standard_normal((batch, 50)), rng.standard_normal((batch, 50))),
    }
    rows = []
    for name, gradient in {**CANDIDATES, "implicit": "implicit"}.items():
        row: dict[str, object] = {"method": name}
        for key, (problem, param, var, predicted, weight) in settings.items():
            layer = CvxpyLayer(problem, [param], [var], solver="CLARABEL")
            c_hat = torch.tensor(predicted, requires_grad=True)
            with recorded():
                (layer(c_hat, gradient=gradient)[0] * torch.tensor(weight)).sum().backward()
            row[key] = nonzero_fraction(c_hat.grad, torch.tensor(weight), c_hat.detach())
        rows.append(row)
    return rows


# ---------------------------------------------------------------- demo: make demo's training
def demo(epochs: int) -> Table:
    layer, data = demo_data(grid=5, train=200, test=200, seed=0)
    methods = {**CANDIDATES, **{f"LPGD(tau={t:g})": LPGD(tau=t) for t in (1.0, 10.0, 100.0)}}
    rows = []
    for name, gradient in methods.items():
        with recorded() as record:
            result = demo_train("demo", layer, gradient, data, epochs, 32, 0)
        rows.append(
            {
                "method": name,
                "regret": result["regret"],
                "seconds": result["seconds"],
                "warnings": len(record),
            }
        )
    return rows


def markdown(rows: Table) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["core", "readme", "nonzero", "demo"],
        choices=["core", "smooth", "readme", "nonzero", "demo"],
    )
    parser.add_argument("--solver", default="CLARABEL", help="solver of the candidates in readme")
    parser.add_argument("--readme-seeds", type=int, default=100)
    parser.add_argument("--demo-epochs", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the tables as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    parts = {
        "core": lambda: core(["SCS", "CLARABEL"]),
        "smooth": lambda: smooth(["SCS", "CLARABEL"]),
        "readme": lambda: readme(args.solver, args.readme_seeds),
        "nonzero": lambda: nonzero(64, 5),
        "demo": lambda: demo(args.demo_epochs),
    }
    results = {}
    for part in args.parts:
        start = time.perf_counter()
        results[part] = parts[part]()
        print(f"\n## {part} ({time.perf_counter() - start:.0f} s)\n\n{markdown(results[part])}\n", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
