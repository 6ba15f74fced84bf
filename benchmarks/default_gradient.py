"""Which backward pass should ``gradient="lpgd"`` mean? Candidates side by side on five measures.

  core     relative gradient error per parameter vs central finite differences (and vs
           gradient="implicit") on the five smooth core problems (tests/problems.py)
  readme   cvxpylayers' README example, 100 seeds: failed backward calls, cosine to implicit
  nonzero  fraction of items with a non-zero cost gradient on shortest-path and dense-LP layers
  demo     held-out regret of ``make demo``'s training (cvxlpgd/demo.py)
  dfl      shortest path (tutorial 03): regret after training, by polynomial degree and
           training-set size, with SPO+ and two-stage regression as reference rows

Run from the repository root, e.g. (the small version):
  python -m benchmarks.default_gradient --parts core readme nonzero demo
  python -m benchmarks.default_gradient --parts dfl --degrees 1 2 4 6 --train-sizes 100 1000 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import cvxpy as cp
import numpy as np
import torch

from cvxlpgd import LPGD, AdaptiveLPGD, CvxpyLayer
from cvxlpgd.demo import demo_data
from cvxlpgd.demo import train as demo_train
from cvxlpgd.examples import grid_shortest_path, normalized_regret, shortest_path_data
from tests.problems import SmoothCase, finite_difference, smooth_cases

CANDIDATES: dict[str, AdaptiveLPGD | LPGD] = {
    "LPGD(tau=1) [today]": LPGD(tau=1.0),
    "relative 1": AdaptiveLPGD(small=1.0, large=None),
    "relative 1e-3": AdaptiveLPGD(small=1e-3, large=None),
    # Degenerate blocks found by structure (an LP) or by the small step's lack of movement; the
    # branch that chose it also measured each rule alone: identical on every problem here.
    "hybrid (default)": AdaptiveLPGD(),
}
# Sensitivity of the LP behaviour to the large step (used by the dfl part only).
LARGE_STEPS = {f"hybrid, large={r:g}": AdaptiveLPGD(large=r) for r in (0.3, 1.0, 2.0, 3.0)}
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


# ---------------------------------------------------------------- dfl: tutorial 03's shortest path
class SPOPlus(torch.autograd.Function):
    """SPO+ loss (Elmachtoub & Grigas) with the layer's forward solver; its gradient w.r.t. the
    predicted costs is 2 (x*(c) - x*(2 c_hat - c))."""

    @staticmethod
    def forward(ctx, c_hat: torch.Tensor, c: torch.Tensor, x_true: torch.Tensor, layer: CvxpyLayer):
        with torch.no_grad():
            x_spo = layer(2 * c_hat - c)[0]
        ctx.save_for_backward(2 * (x_true - x_spo))
        return -((2 * c_hat - c) * x_spo).sum(1) + 2 * (c_hat * x_true).sum(1) - (c * x_true).sum(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (direction,) = ctx.saved_tensors
        return grad[:, None] * direction, None, None, None


def train_dfl(
    method: str,
    gradient: object,
    data: dict[str, torch.Tensor],
    layer: CvxpyLayer,
    epochs: int,
    seed: int,
    lr: float = 1e-2,
    batch: int = 32,
) -> float:
    """Tutorial 03's training: linear model, Adam, decision loss sum(c / mean(c) * x); test regret."""
    torch.manual_seed(seed)
    features, costs = data["train_x"], data["train_c"]
    model = torch.nn.Linear(features.shape[1], costs.shape[1]).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        perm = torch.randperm(len(features), generator=order)
        for start in range(0, len(features), batch):
            idx = perm[start : start + batch]
            c_hat, c = model(features[idx]), costs[idx]
            if method == "two-stage":
                loss = ((c_hat - c) ** 2).mean()
            elif method == "SPO+":
                loss = SPOPlus.apply(c_hat, c, data["train_sol"][idx], layer).sum()
            else:
                loss = (c / c.mean(1, keepdim=True) * layer(c_hat, gradient=gradient)[0]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        decisions = layer(model(data["test_x"]))[0].numpy()
    return normalized_regret(data["test_c"].numpy(), decisions, data["test_opt"].numpy())


def dfl(
    grid: int, degrees: list[int], sizes: list[int], test: int, epochs: int, seeds: int, methods: list[str]
) -> Table:
    path = grid_shortest_path(grid)
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="CLARABEL")
    known = {**CANDIDATES, **LARGE_STEPS, "SPO+": None, "two-stage": None}
    rows = []
    for degree in degrees:
        for size in sizes:
            for name in methods:
                regrets, start = [], time.perf_counter()
                for seed in range(seeds):
                    x, c = shortest_path_data(size + test, len(path.edges), degree=degree, seed=seed)
                    x, c = torch.tensor(x), torch.tensor(c)
                    with torch.no_grad():
                        sol = layer(c)[0]
                    data = {
                        "train_x": x[:size],
                        "train_c": c[:size],
                        "train_sol": sol[:size],
                        "test_x": x[size:],
                        "test_c": c[size:],
                        "test_opt": (c[size:] * sol[size:]).sum(1),
                    }
                    with recorded():
                        regrets.append(train_dfl(name, known[name], data, layer, epochs, seed))
                rows.append(
                    {
                        "degree": degree,
                        "train": size,
                        "method": name,
                        "regret": float(np.mean(regrets)),
                        "std": float(np.std(regrets)),
                        "seconds": time.perf_counter() - start,
                    }
                )
                print(rows[-1], flush=True)
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
        choices=["core", "readme", "nonzero", "demo", "dfl"],
    )
    parser.add_argument("--solver", default="CLARABEL", help="solver of the candidates in readme")
    parser.add_argument("--readme-seeds", type=int, default=100)
    parser.add_argument("--demo-epochs", type=int, default=8)
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--degrees", type=int, nargs="+", default=[1, 2, 4, 6])
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--methods", nargs="+", default=["hybrid (default)", "LPGD(tau=1) [today]", "SPO+", "two-stage"]
    )
    parser.add_argument("--out", default=None, help="write the tables as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    parts = {
        "core": lambda: core(["SCS", "CLARABEL"]),
        "readme": lambda: readme(args.solver, args.readme_seeds),
        "nonzero": lambda: nonzero(64, args.grid),
        "demo": lambda: demo(args.demo_epochs),
        "dfl": lambda: dfl(
            args.grid, args.degrees, args.train_sizes, args.test, args.epochs, args.seeds, args.methods
        ),
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
