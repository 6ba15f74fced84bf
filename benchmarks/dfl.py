"""Decision-focused learning on PyEPO's data: cvxlpgd's losses against PyEPO's (on Gurobi).

Problems: PyEPO's 5x5 shortest path (minimize, an LP) and its 2 x 32 0/1 knapsack (maximize, a
MILP), features and costs from ``pyepo.data.*.genData``, true solutions from PyEPO's own dataset
(Gurobi). Protocol (that of benchmarks/DEFAULT_GRADIENT.md): a linear model from the features to
the costs, Adam (lr 1e-2), batch 32, 20 epochs; every method starts from the same initialisation
and sees the batches in the same order. Reported per method: test regret (PyEPO's normalized
regret, decisions solved exactly with HiGHS), CPU seconds per training epoch
(``time.process_time``: the whole process, the layer's thread pool included) and the share of
training items whose predicted cost got a zero
gradient (norm below 1e-6).

Methods (``--methods``; ``train`` also takes any callable ``Dataset -> LossFunction``):
  lpgd-highs, lpgd-clarabel    the layer's default gradient on the decision loss a user writes,
                               the batch mean of the true cost of the decision
  spo+-highs, spo+-clarabel    cvxlpgd.dfl.SPOPlus on that layer
  pfyl-highs, pfyl-clarabel    cvxlpgd.dfl.PerturbedFenchelYoung (3 samples, sigma 1)
  pyepo-spo+, pyepo-pfyl       PyEPO's SPO+ and perturbed Fenchel-Young on Gurobi (one process)
  two-stage                    mean squared error of the predicted costs (no solver in training)
  lpgd-gurobi, spo+-gurobi, ...  the same on cvxlpgd's Gurobi backend (run when gurobipy is installed)
Clarabel solves no MILP, so the ``-clarabel`` methods skip the knapsack.

  python -m benchmarks.dfl --quick              # one small cell per problem, printed
  python -m benchmarks.dfl --write              # the full grid, into benchmarks/RESULTS.md
  python -m benchmarks.dfl --problems "shortest path" --train-sizes 1000 --degrees 4 --seeds 0 \
      --epochs 5 --write --section dfl-epoch      # one cell, for CPU per epoch, in a section of its own

A gradient variant, from Python:
  data = make_dataset("shortest path", train=100, test=1000, degree=4, seed=0)
  variant = lambda d: decision_loss(d.layer("HIGHS", gradient=AdaptiveLPGD(large=2.0)), d.sense)
  regret, cpu_per_epoch, zero_grad_share = train(variant, data)
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import cvxpy as cp
import numpy as np
import torch

from benchmarks.report import _version, machine_info, write_section
from cvxlpgd import AdaptiveLPGD, CvxpyLayer
from cvxlpgd.dfl import PerturbedFenchelYoung, Sense, SPOPlus, regret
from cvxlpgd.examples import grid_shortest_path
from cvxlpgd.solvers.optional import optional_solvers

KNAPSACK_ITEMS, KNAPSACK_DIM, KNAPSACK_CAPACITY = 32, 2, 20.0
FEATURES, NOISE = 5, 0.5
PFYL_SAMPLES, PFYL_SIGMA, PFYL_SEED = 3, 1.0, 135
ZERO_GRADIENT = 1e-6

# One batch: features, true costs, true solutions, true optimal values (PyEPO's order).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
LossFunction = Callable[[torch.Tensor, Batch], torch.Tensor]


@dataclass(frozen=True)
class Dataset:
    """A training and a test set of one problem, and how to build its layer and its PyEPO model."""

    problem: str  # "shortest path" or "knapsack"
    degree: int
    seed: int
    train: Batch
    test: Batch
    weights: np.ndarray | None = None  # the knapsack's item weights

    @property
    def sense(self) -> Sense:
        return Sense.MAXIMIZE if self.problem == "knapsack" else Sense.MINIMIZE

    def layer(self, solver: str, **kwargs) -> CvxpyLayer:
        """The CVXPY layer of this problem (costs in, decision out); kwargs go to ``CvxpyLayer``."""
        if self.problem == "shortest path":
            path = grid_shortest_path(5)
            return CvxpyLayer(path.problem, [path.cost], [path.flow], solver=solver, **kwargs)
        value = cp.Parameter(KNAPSACK_ITEMS, name="value")
        pick = cp.Variable(KNAPSACK_ITEMS, name="pick", boolean=True)
        capacity = np.full(KNAPSACK_DIM, KNAPSACK_CAPACITY)
        problem = cp.Problem(cp.Maximize(value @ pick), [self.weights @ pick <= capacity])
        return CvxpyLayer(problem, [value], [pick], solver=solver, **kwargs)

    def pyepo_model(self):
        """PyEPO's Gurobi model of the same problem."""
        from pyepo.model.grb import knapsackModel, shortestPathModel

        if self.problem == "shortest path":
            return shortestPathModel((5, 5))
        return knapsackModel(self.weights, [KNAPSACK_CAPACITY] * KNAPSACK_DIM)


def make_dataset(problem: str, train: int, test: int, degree: int, seed: int) -> Dataset:
    """PyEPO's generator and its Gurobi-solved dataset; float32, as PyEPO's data loaders give it."""
    import pyepo

    weights = None
    if problem == "shortest path":
        x, c = pyepo.data.shortestpath.genData(
            train + test, FEATURES, (5, 5), deg=degree, noise_width=NOISE, seed=seed
        )
    elif problem == "knapsack":
        weights, x, c = pyepo.data.knapsack.genData(
            train + test, FEATURES, KNAPSACK_ITEMS, dim=KNAPSACK_DIM, deg=degree, noise_width=NOISE, seed=seed
        )
    else:
        raise ValueError(f"Unknown problem {problem!r}: 'shortest path' or 'knapsack'.")
    data = Dataset(problem, degree, seed, train=(), test=(), weights=weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solved = pyepo.data.dataset.optDataset(data.pyepo_model(), x, c)
    tensors = [
        torch.as_tensor(np.asarray(a), dtype=torch.float32)
        for a in (x, solved.costs, solved.sols, solved.objs)
    ]
    tensors[3] = tensors[3].reshape(-1)
    return replace(data, train=tuple(t[:train] for t in tensors), test=tuple(t[train:] for t in tensors))


# ---------------------------------------------------------------- methods: Dataset -> loss function
def decision_loss(layer: CvxpyLayer, sense: Sense) -> LossFunction:
    """What a user writes with the layer's own gradient: the batch mean of the decision's true cost
    (its negative for a maximization)."""
    return lambda pred, batch: float(sense) * (batch[1] * layer(pred)[0]).sum(1).mean()


@dataclass(frozen=True)
class CvxlpgdMethod:
    """A loss of cvxlpgd on the problem's layer with ``solver``: the default gradient on the
    decision loss (``"lpgd"``), ``"spo+"`` or ``"pfyl"``."""

    loss: str
    solver: str
    gradient: AdaptiveLPGD | None = None  # another configuration of the default gradient

    def __call__(self, data: Dataset) -> LossFunction:
        options = {} if self.gradient is None else {"gradient": self.gradient}
        layer = data.layer(self.solver, **options)
        if self.loss == "lpgd":
            return decision_loss(layer, data.sense)
        if self.loss == "spo+":
            spo = SPOPlus(layer)
            return lambda pred, batch: spo(pred, batch[1], batch[2], batch[3])
        generator = torch.Generator().manual_seed(PFYL_SEED)
        pfy = PerturbedFenchelYoung(layer, PFYL_SAMPLES, PFYL_SIGMA, generator)
        return lambda pred, batch: pfy(pred, batch[2])


@dataclass(frozen=True)
class PyepoMethod:
    """PyEPO's ``"spo+"`` or ``"pfyl"`` on its Gurobi model, in one process."""

    loss: str

    def __call__(self, data: Dataset) -> LossFunction:
        import pyepo

        model = data.pyepo_model()
        if self.loss == "spo+":
            spo = pyepo.func.SPOPlus(model, processes=1)
            return lambda pred, batch: spo(pred, batch[1], batch[2], batch[3])
        pfy = pyepo.func.perturbedFenchelYoung(
            model, n_samples=PFYL_SAMPLES, sigma=PFYL_SIGMA, seed=PFYL_SEED
        )
        return lambda pred, batch: pfy(pred, batch[2])


def _two_stage(data: Dataset) -> LossFunction:
    return lambda pred, batch: torch.nn.functional.mse_loss(pred, batch[1])


METHODS: dict[str, Callable[[Dataset], LossFunction]] = {
    **{
        f"{loss}-{solver.lower()}": CvxlpgdMethod(loss, solver)
        for loss in ("lpgd", "spo+", "pfyl")
        for solver in ("HIGHS", "CLARABEL", "GUROBI")
    },
    # The finite step's alternatives measured in benchmarks/DEFAULT_GRADIENT.md (large, large_upper).
    **{
        f"lpgd-{name}-highs": CvxlpgdMethod("lpgd", "HIGHS", AdaptiveLPGD(large=large, large_upper=upper))
        for name, (large, upper) in {
            "lower10": (10.0, None),
            "lower1.5": (1.5, None),
            "central1.5": (1.5, 1.5),
        }.items()
    },
    "pyepo-spo+": PyepoMethod("spo+"),
    "pyepo-pfyl": PyepoMethod("pfyl"),
    "two-stage": _two_stage,
}


def applies(method: Callable[[Dataset], LossFunction], data: Dataset) -> bool:
    """Clarabel solves no mixed-integer program: its methods skip the knapsack."""
    return not (
        isinstance(method, CvxlpgdMethod) and method.solver == "CLARABEL" and data.problem == "knapsack"
    )


def available(name: str) -> bool:
    """The ``-gurobi`` methods need gurobipy (an optional dependency, as PyEPO's own)."""
    method = METHODS[name]
    return not (isinstance(method, CvxlpgdMethod) and method.solver == "GUROBI") or bool(optional_solvers())


# ---------------------------------------------------------------- training
class Result(NamedTuple):
    regret: float  # normalized test regret
    cpu_per_epoch: float  # process CPU seconds per training epoch (all threads)
    zero_grad_share: float  # share of training items whose predicted cost got a zero gradient


def train(
    method: str | Callable[[Dataset], LossFunction],
    dataset: Dataset,
    epochs: int = 20,
    batch: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
) -> Result:
    """Train a linear model with ``method`` (a name of ``METHODS`` or any ``Dataset -> loss``
    callable) on ``dataset``: the same initialisation and batch order for every method, given the
    seed. Test regret is measured on exact HiGHS solves of the model's predictions."""
    build = METHODS[method] if isinstance(method, str) else method
    loss_of = build(dataset)
    x, c, w, z = dataset.train
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], c.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed + 1)
    zero, seen, cpu = 0, 0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # solver warnings are counted by the layer; keep output readable
        for _ in range(epochs):
            start = time.process_time()
            perm = torch.randperm(len(x), generator=order)
            for lo in range(0, len(x), batch):
                idx = perm[lo : lo + batch]
                pred = model(x[idx])
                pred.retain_grad()
                loss = loss_of(pred, (x[idx], c[idx], w[idx], z[idx]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                zero += int((pred.grad.norm(dim=1) < ZERO_GRADIENT).sum())
                seen += len(idx)
            cpu += time.process_time() - start
        with torch.no_grad():
            pred = model(dataset.test[0])
        test_regret = regret(dataset.layer("HIGHS"), pred, dataset.test[1], dataset.test[3])
    return Result(test_regret, cpu / epochs, zero / seen)


# ---------------------------------------------------------------- grid and report
@dataclass(frozen=True)
class Grid:
    """The cells of one problem: every train size x degree, each averaged over the seeds."""

    problem: str
    train_sizes: tuple[int, ...]
    degrees: tuple[int, ...]
    seeds: tuple[int, ...]
    test: int
    epochs: int


QUICK = (
    Grid("shortest path", (100,), (4,), (0,), test=200, epochs=5),
    Grid("knapsack", (100,), (4,), (0,), test=200, epochs=5),
)
# The knapsack at degree 4 only (DEFAULT_GRADIENT.md's cell): its MILPs cost 10-100x the path's LPs.
FULL = (
    Grid("shortest path", (100, 1000), (2, 4, 6), (0, 1), test=1000, epochs=20),
    Grid("knapsack", (100, 1000), (4,), (0, 1), test=1000, epochs=20),
)


def run(grids: tuple[Grid, ...], methods: list[str], log: Callable[[str], None] = print) -> list[dict]:
    """One row per (problem, train size, degree, method): means over the seeds."""
    rows = []
    for grid in grids:
        for size in grid.train_sizes:
            for degree in grid.degrees:
                results: dict[str, list[Result]] = {m: [] for m in methods}
                for seed in grid.seeds:
                    data = make_dataset(grid.problem, size, grid.test, degree, seed)
                    for name in methods:
                        if applies(METHODS[name], data):
                            results[name].append(train(name, data, grid.epochs, seed=seed))
                for name, res in results.items():
                    if not res:
                        continue
                    rows.append(
                        {
                            "problem": grid.problem,
                            "train": size,
                            "degree": degree,
                            "method": name,
                            "regret": statistics.mean(r.regret for r in res),
                            "cpu_per_epoch": statistics.mean(r.cpu_per_epoch for r in res),
                            "zero_grad_share": statistics.mean(r.zero_grad_share for r in res),
                        }
                    )
                    log("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in rows[-1].items()))
    return rows


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], grids: tuple[Grid, ...], command: str) -> str:
    """Tables per problem: regret (%) and CPU per epoch (s) by method and cell, and the ratios of
    cvxlpgd's losses to PyEPO's."""
    info = machine_info()
    for pkg in ("pyepo", "gurobipy", "highspy"):
        info[pkg] = _version(pkg)
    lines = [
        "## Decision-focused learning: cvxlpgd.dfl against PyEPO (Gurobi)",
        "",
        f"`{command}`: batch 32, Adam 1e-2, a linear model from {FEATURES} features, noise {NOISE}; "
        f"knapsack {KNAPSACK_DIM} x {KNAPSACK_ITEMS} items, capacity {KNAPSACK_CAPACITY:g}; PFYL "
        f"{PFYL_SAMPLES} samples, sigma {PFYL_SIGMA:g}. "
        + "; ".join(
            f"{g.problem}: {len(g.seeds)} seed(s), {g.epochs} epochs, {g.test} test samples" for g in grids
        )
        + ". Regret in % (PyEPO's normalized regret, mean over seeds); CPU: process CPU seconds per "
        "training epoch, all threads. Every layer with its solver's defaults.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
    ]
    cells = list(dict.fromkeys((r["problem"], r["train"], r["degree"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["problem"], r["train"], r["degree"], r["method"]): r for r in rows}
    for problem in dict.fromkeys(p for p, _, _ in cells):
        mine = [c for c in cells if c[0] == problem]
        header = "| method | " + " | ".join(f"n={n} deg={d}" for _, n, d in mine) + " |"
        for key, title, scale, digits in (
            ("regret", "test regret (%)", 100.0, 2),
            ("cpu_per_epoch", "CPU s / epoch", 1.0, 3),
            ("zero_grad_share", "zero-gradient items (%)", 100.0, 1),
        ):
            lines += [f"**{problem}: {title}**", "", header, "|---|" + "---|" * len(mine)]
            for m in methods:
                cols = [by.get((*cell, m)) for cell in mine]
                if all(col is None for col in cols):
                    continue
                vals = ["–" if col is None else f"{col[key] * scale:.{digits}f}" for col in cols]
                lines.append(f"| {m} | " + " | ".join(vals) + " |")
            lines.append("")
        solvers = ("highs", "clarabel", "gurobi")
        # The default gradient against PyEPO's SPO+ first (the epoch targets: path <= 2x, knapsack <= 5x).
        pairs = [(f"lpgd-{s}", "pyepo-spo+") for s in solvers]
        pairs += [(f"spo+-{s}", "pyepo-spo+") for s in solvers]
        pairs += [(f"pfyl-{s}", "pyepo-pfyl") for s in solvers]
        pairs = [(a, b) for a, b in pairs if a in methods and b in methods]
        if pairs:
            lines += [
                f"**{problem}: cvxlpgd against PyEPO** (regret difference in pts, mean and max over "
                "cells; CPU ratio, median over cells)",
                "",
                "| cvxlpgd | PyEPO | regret diff mean (pts) | max abs (pts) | CPU ratio |",
                "|---|---|---|---|---|",
            ]
            for a, b in pairs:
                both = [
                    (by[(*cell, a)], by[(*cell, b)]) for cell in mine if (*cell, a) in by and (*cell, b) in by
                ]
                if not both:
                    continue
                diffs = [100 * (ra["regret"] - rb["regret"]) for ra, rb in both]
                ratio = statistics.median(ra["cpu_per_epoch"] / rb["cpu_per_epoch"] for ra, rb in both)
                mean, worst = statistics.mean(diffs), max(map(abs, diffs))
                lines.append(f"| {a} | {b} | {mean:+.2f} | {worst:.2f} | {ratio:.2f} |")
            lines.append("")
    return "\n".join(lines)




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small cell per problem (5 epochs)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--problems", nargs="+", choices=["shortest path", "knapsack"])
    parser.add_argument("--train-sizes", type=int, nargs="+")
    parser.add_argument("--degrees", type=int, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--test", type=int)
    parser.add_argument("--write", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    parser.add_argument(
        "--section",
        default="dfl",
        help="the RESULTS.md section --write replaces (default dfl: the full grid; dfl-epoch: a CPU run)",
    )
    args = parser.parse_args(argv)
    overrides = {
        "train_sizes": args.train_sizes,
        "degrees": args.degrees,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "test": args.test,
    }
    chosen = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    grids = tuple(
        replace(g, **chosen)
        for g in (QUICK if args.quick else FULL)
        if args.problems is None or g.problem in args.problems
    )
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = run(grids, [m for m in args.methods if available(m)])
    command = "python -m benchmarks.dfl " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = markdown(rows, grids, command.strip()) + f"\nWall time {time.perf_counter() - start:.0f} s.\n"
    print("\n" + text)
    if args.write:
        write_section(Path(__file__).parent / "RESULTS.md", args.section, text)


if __name__ == "__main__":
    main()
