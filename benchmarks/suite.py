"""The main matrix: problems a-e x {SCS, Clarabel} x batch sizes x variants, timed round-robin.

Variants per (problem, solver, batch):

* ``lpgd-lower`` / ``lpgd-upper`` / ``lpgd-central``: cvxlpgd forward + LPGD backward (tau=1, rho=0);
* ``default``: cvxlpgd with no gradient chosen (``AdaptiveLPGD``: a small central step, and a
  large one for the blocks it leaves degenerate; 2 to 4 re-solves per item);
* ``implicit``: cvxlpgd with ``gradient="implicit"`` (diffcp);
* ``cvxpylayers``: cvxpylayers 1.x, default diffcp path, same solver via ``solve_method``;
* ``raw-build`` / ``raw-update``: the layer's conic data solved by scs / clarabel directly.

Every repeat runs each variant once, in a fixed order that alternates cvxlpgd and the peer
(lower, cvxpylayers, upper, central, default, implicit, raw-build, raw-update), so slow drifts of a
shared machine hit all variants alike.
"""

from __future__ import annotations

import statistics
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.problems import BenchProblem
from benchmarks.raw import RawBaseline, items_of
from benchmarks.timing import Samples, time_layer, time_plain
from cvxlpgd import LPGD, CvxpyLayer

SOLVER_ARGS: dict[str, dict] = {"SCS": {"eps": 1e-6, "max_iters": 10_000}, "CLARABEL": {}}
PEER_ARGS: dict[str, dict] = {
    "SCS": {"solve_method": "SCS", "eps": 1e-6, "max_iters": 10_000},
    "CLARABEL": {"solve_method": "Clarabel"},
}
LPGD_SIDES = ("lower", "upper", "central")
ORDER = (
    "lpgd-lower",
    "cvxpylayers",
    "lpgd-upper",
    "lpgd-central",
    "default",
    "implicit",
    "raw-build",
    "raw-update",
)


def load_peer() -> tuple[type | None, str]:
    """cvxpylayers' torch layer class and its version, or ``(None, reason)``."""
    try:
        import cvxpylayers
        from cvxpylayers.torch import CvxpyLayer as PeerLayer
    except Exception as error:  # noqa: BLE001 - any import failure means "not available"
        return None, f"not importable ({type(error).__name__}: {error})"
    return PeerLayer, getattr(cvxpylayers, "__version__", "unknown")


@dataclass
class Row:
    """Per-item medians (ms) of one variant at one (problem, solver, batch)."""

    problem: str
    solver: str
    batch: int
    variant: str
    forward: float | None
    backward: float | None
    total: float | None
    repeats: int
    note: str = ""
    # median over repeats of (this variant's f+b) / (cvxpylayers' f+b in the same repeat)
    peer_ratio: float | None = None
    # median over repeats of (this variant's forward) / (raw-build's in the same repeat)
    raw_ratio: float | None = None


@dataclass
class Variant:
    name: str
    call: Callable[[Samples | None], None]
    samples: Samples
    note: str = ""
    dead: bool = False


def _variants(
    bp: BenchProblem,
    solver: str,
    layer: CvxpyLayer,
    peer: torch.nn.Module | None,
    raw: RawBaseline,
    values: list[np.ndarray],
    weights: list[torch.Tensor],
) -> list[Variant]:
    batch = values[0].shape[0]
    theta = np.hstack([v.reshape(batch, -1) for v in values])
    programs = items_of(layer, theta)
    calls: dict[str, Callable[[Samples | None], None]] = {}
    for side in LPGD_SIDES:
        grad = LPGD(side=side)
        calls[f"lpgd-{side}"] = lambda s, g=grad: time_layer(
            lambda *p: layer(*p, gradient=g), values, weights, s
        )
    # What a user gets without choosing: AdaptiveLPGD (a small central step, plus a large one
    # for the blocks it leaves degenerate).
    calls["default"] = lambda s: time_layer(layer, values, weights, s)
    calls["implicit"] = lambda s: time_layer(lambda *p: layer(*p, gradient="implicit"), values, weights, s)
    if peer is not None:
        calls["cvxpylayers"] = lambda s: time_layer(peer, values, weights, s)
    calls["raw-build"] = lambda s: time_plain(lambda: raw.solve_build(programs), s)
    calls["raw-update"] = lambda s: time_plain(lambda: raw.solve_update(programs), s)
    return [Variant(name, calls[name], Samples()) for name in ORDER if name in calls]


def run_problem(
    bp: BenchProblem,
    solver: str,
    batches: tuple[int, ...],
    repeats: dict[int, int],
    call_budget_s: float,
    peer_cls: type | None,
    log: Callable[[str], None],
) -> list[Row]:
    """All variants of one problem and solver at every batch size."""
    layer = CvxpyLayer(
        bp.problem, bp.parameters, bp.variables, solver=solver, solver_args=SOLVER_ARGS[solver]
    )
    peer = None
    peer_note = ""
    if peer_cls is not None:
        try:
            peer = peer_cls(bp.problem, bp.parameters, bp.variables, solver_args=PEER_ARGS[solver])
        except Exception as error:  # noqa: BLE001 - reported in the table
            peer_note = f"construction failed: {type(error).__name__}: {error}"
    raw = RawBaseline(solver, SOLVER_ARGS[solver])
    rows: list[Row] = []
    last_total: dict[str, float] = {}  # per-item ms at the previous batch size, for the budget
    try:
        for batch in batches:
            values = bp.batch(batch, seed=batch)
            gen = torch.Generator().manual_seed(batch)
            weights = [
                torch.randn((batch, *v.shape), generator=gen, dtype=torch.float64) for v in bp.variables
            ]
            variants = _variants(bp, solver, layer, peer, raw, values, weights)
            for v in variants:
                estimate = last_total.get(v.name, 0.0) * batch / 1e3
                if estimate > call_budget_s:
                    v.dead, v.note = (
                        True,
                        f"skipped: estimated {estimate:.0f} s per call > budget {call_budget_s:.0f} s",
                    )
            _run_rounds(variants, repeats[batch], warmup=batch <= 16)
            peer_samples = next((v.samples.total for v in variants if v.name == "cvxpylayers"), [])
            raw_samples = next((v.samples.forward for v in variants if v.name == "raw-build"), [])
            for v in variants:
                stats = v.samples.per_item_ms(batch)
                if stats["total"] is not None:
                    last_total[v.name] = stats["total"]
                rows.append(
                    Row(
                        bp.key,
                        solver,
                        batch,
                        v.name,
                        stats["forward"],
                        stats["backward"],
                        stats["total"],
                        len(v.samples.total),
                        v.note,
                        _paired_ratio(v.samples.total, peer_samples),
                        _paired_ratio(v.samples.forward, raw_samples),
                    )
                )
            if peer is None:
                rows.append(
                    Row(
                        bp.key,
                        solver,
                        batch,
                        "cvxpylayers",
                        None,
                        None,
                        None,
                        0,
                        peer_note or "cvxpylayers not installed",
                    )
                )
            log(_progress(bp, solver, batch, rows))
    finally:
        raw.close()
    return rows


def _paired_ratio(ours: list[float], peer: list[float]) -> float | None:
    """Median of per-repeat ratios: each repeat times both in one round, so drifts cancel."""
    if not ours or len(ours) != len(peer):
        return None
    return statistics.median(a / b for a, b in zip(ours, peer, strict=True))


def _run_rounds(variants: list[Variant], repeats: int, warmup: bool) -> None:
    """Warm-up (optional), then ``repeats`` round-robin rounds; a failing variant is dropped."""
    for round_index in range(repeats + int(warmup)):
        for v in variants:
            if v.dead:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    v.call(None if warmup and round_index == 0 else v.samples)
            except Exception as error:  # noqa: BLE001 - reported in the table
                v.dead = True
                v.note = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
                traceback.print_exc(limit=2)


def _progress(bp: BenchProblem, solver: str, batch: int, rows: list[Row]) -> str:
    parts = [
        f"{r.variant}={r.total:.2f}"
        for r in rows
        if r.batch == batch and r.solver == solver and r.problem == bp.key and r.total is not None
    ]
    return f"  {bp.key:9s} {solver:8s} B={batch:<3d} f+b ms/item: " + " ".join(parts)
