"""LPGD: gradients from a re-solve of the conic program with costs perturbed by the incoming
gradient (Paulus, Martius & Musil, ICML 2024). See DESIGN.md section 3 for the formulas.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from cvxlpgd.compile import ConeStructure, ProgramBatch
from cvxlpgd.cone import ConeProgram, Solution

Side = Literal["central", "lower", "upper"]
_SIGNS = {"lower": (1,), "upper": (-1,), "central": (1, -1)}

DEFAULT_TAU = 1.0


@dataclass(frozen=True)
class LPGD:
    """LPGD backward pass.

    tau:  size of the cost perturbation ``tau * dx`` (and ``tau * dy`` on ``b``). Small tau
          approaches the true derivative where one exists; on LPs a tau that moves the
          solution to a neighbouring vertex gives an informative gradient.
    rho:  proximal weight; ``rho > 0`` adds ``rho/2 ||x - x*||^2`` to the perturbed problems,
          which makes them strongly convex (bounded, smoother gradients) at the price of bias.
    side: ``"lower"`` uses the ``+tau`` solve, ``"upper"`` the ``-tau`` one, ``"central"`` both.
    fallback: when a perturbed problem is infeasible or unbounded on one side, use the one-sided
          estimate of the other side (solving it if the side was not in use) and warn, instead
          of failing the item. Off by default, so that a changed estimator is never silent.
    """

    tau: float = DEFAULT_TAU
    rho: float = 0.0
    side: Side = "central"
    fallback: bool = False

    def __post_init__(self) -> None:
        # Accept numpy and torch scalars; store plain floats.
        object.__setattr__(self, "tau", _real("tau", self.tau, "> 0", lambda t: t > 0))
        object.__setattr__(self, "rho", _real("rho", self.rho, ">= 0", lambda r: r >= 0))
        if self.side not in _SIGNS:
            raise ValueError(f"LPGD side must be one of {sorted(_SIGNS)}, got {self.side!r}.")
        if not isinstance(self.fallback, bool):
            raise TypeError(f"LPGD fallback must be True or False, got {self.fallback!r}.")


def _real(name: str, value: object, bound: str, holds: Callable[[float], bool]) -> float:
    """A finite float satisfying ``holds`` from a Python, numpy or one-element torch number."""
    is_number = isinstance(value, numbers.Real) or (
        hasattr(value, "__float__") and getattr(value, "numel", lambda: 1)() == 1
    )
    number = float(value) if is_number and not isinstance(value, (bool, np.bool_)) else math.nan
    if not (math.isfinite(number) and holds(number)):
        raise ValueError(f"LPGD {name} must be a finite number {bound}, got {value!r}.")
    return number


@dataclass(frozen=True)
class DataGradient:
    """Gradient w.r.t. the conic data values of one item (on the fixed sparsity patterns)."""

    A: np.ndarray
    b: np.ndarray
    c: np.ndarray
    P: np.ndarray | None


def lagrangian_gradient(structure: ConeStructure, x: np.ndarray, y: np.ndarray) -> DataGradient:
    """G(z): dL/dP = 1/2 x x' (upper triangle storage), dL/dA = y x', dL/db = -y, dL/dc = x."""
    A = y[structure.A.indices] * x[structure.A.columns]
    P = None
    if structure.P is not None:
        rows, cols = structure.P.indices, structure.P.columns
        P = x[rows] * x[cols] * np.where(rows == cols, 0.5, 1.0)
    return DataGradient(A=A, b=-y, c=x.copy(), P=P)


def _difference(plus: DataGradient, minus: DataGradient, scale: float) -> DataGradient:
    return DataGradient(
        A=(plus.A - minus.A) * scale,
        b=(plus.b - minus.b) * scale,
        c=(plus.c - minus.c) * scale,
        P=None if plus.P is None else (plus.P - minus.P) * scale,
    )


def proximal_P(P: sp.csc_array | None, n: int, rho: float) -> sp.csc_array | None:
    """P + rho I (upper triangle), the quadratic term of the perturbed problems."""
    if rho == 0:
        return P
    upper = sp.triu(P if P is not None else sp.csc_array((n, n)))
    return sp.csc_array(upper + rho * sp.identity(n, format="csc"))


def perturbed_program(
    program: ConeProgram,
    P_rho: sp.csc_array | None,
    solution: Solution,
    dx: np.ndarray,
    dy: np.ndarray | None,
    sign: int,
    config: LPGD,
) -> ConeProgram:
    """P + rho I (given as ``P_rho``),  c + sign tau dx - rho x*,  b - sign tau dy;  same A, cones."""
    c = program.c + sign * config.tau * dx - config.rho * solution.x
    b = program.b if dy is None else program.b - sign * config.tau * dy
    return ConeProgram(A=program.A, b=b, c=c, dims=program.dims, P=P_rho)


def lpgd_item_gradient(
    structure: ConeStructure,
    solution: Solution,
    perturbed: dict[int, Solution],
    config: LPGD,
) -> DataGradient:
    """Combine the forward solution and the perturbed solutions by the chosen side."""
    star = lagrangian_gradient(structure, solution.x, solution.y)
    by_sign = {s: lagrangian_gradient(structure, z.x, z.y) for s, z in perturbed.items()}
    if config.side == "lower":
        return _difference(by_sign[1], star, 1.0 / config.tau)
    if config.side == "upper":
        return _difference(star, by_sign[-1], 1.0 / config.tau)
    return _difference(by_sign[1], by_sign[-1], 0.5 / config.tau)


def signs(config: LPGD) -> tuple[int, ...]:
    """Which perturbed solves (+1: lower, -1: upper) the chosen side needs."""
    return _SIGNS[config.side]


def stack(grads: list[DataGradient], program: ProgramBatch) -> DataGradient:
    """Stack per-item gradients into (B, .) arrays; missing items (None) get zeros."""
    s = program.structure
    zero = zero_gradient(s)
    grads = [zero if g is None else g for g in grads]
    return DataGradient(
        A=np.stack([g.A for g in grads]),
        b=np.stack([g.b for g in grads]),
        c=np.stack([g.c for g in grads]),
        P=None if s.P is None else np.stack([g.P for g in grads]),
    )


# --------------------------------------------------------------------------------------------
# The scale-free default: a small relative step for the near-exact derivative, plus LPGD's
# finite step only for the data blocks that the small step leaves degenerate.
# --------------------------------------------------------------------------------------------

Detect = Literal["structure", "movement", "both"]
_BLOCKS = ("c", "b", "A")
_DETECT = ("structure", "movement", "both")


@dataclass(frozen=True)
class AdaptiveLPGD:
    """Scale-free LPGD: the step is relative to the size of the item's costs, not absolute.

    For each item the perturbation is ``tau_i * dx`` with ``tau_i = rel / r_i`` and
    ``r_i = max(|dx_i| / s_c, |dy_i| / s_b)``, where ``s_c = |c_i| + |P_i x*_i|`` and
    ``s_b = |b_i|`` (2-norms; 1 where zero): the perturbed costs differ from the true ones by
    ``rel`` times their size whatever the scale of the loss, so the gradient is homogeneous of
    degree 1 in ``(dx, dy)``.

    small:  relative step of the near-exact derivative (central differences, rho = 0).
    large:  relative step used for the blocks the small step leaves degenerate (``None``: never):
            the cost block (``c``, ``P``, informed by the movement of ``x``), the right-hand side
            (``b``, by ``y``) and ``A`` (by both), each only if parameters enter it.
    detect: how a block is found degenerate: ``"structure"`` (the program is an LP: ``x`` is
            piecewise constant in ``c`` and ``y`` in ``b``), ``"movement"`` (the small step moved
            ``x`` resp. ``y`` by at most ``noise`` relative to ``1 + |x*|_inf``), or ``"both"``.
    retries: how many times a failed (infeasible or unbounded) step is retried at a tenth of it;
            a side that fails is dropped first (a one-sided difference from the other side).
    """

    small: float = 1e-3
    large: float | None = 1.0
    detect: Detect = "both"
    noise: float = 1e-6
    retries: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "small", _real("small", self.small, "> 0", lambda t: t > 0))
        if self.large is not None:
            object.__setattr__(self, "large", _real("large", self.large, "> 0", lambda t: t > 0))
        object.__setattr__(self, "noise", _real("noise", self.noise, ">= 0", lambda t: t >= 0))
        if self.detect not in _DETECT:
            raise ValueError(f"AdaptiveLPGD detect must be one of {_DETECT}, got {self.detect!r}.")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"AdaptiveLPGD retries must be an integer >= 0, got {self.retries!r}.")


@dataclass(frozen=True)
class Blocks:
    """Which conic data blocks parameters enter (only those need an informative gradient)."""

    c: bool
    b: bool
    A: bool


@dataclass
class StepReport:
    """What happened to one item: failed re-solves, and whether a step had to be weakened."""

    failed_solves: int = 0
    weakened: bool = False  # a smaller step or one side was used
    large_lost: bool = False  # a degenerate block kept the small step's (zero) gradient
    lost: bool = False  # no step worked: zero gradient


def is_lp(structure: ConeStructure) -> bool:
    """No quadratic term and only zero and nonnegative cones: x is piecewise constant in c."""
    dims = structure.dims
    return structure.P is None and dims.size == dims.zero + dims.nonneg


def relative_scales(program: ConeProgram, solution: Solution) -> tuple[float, float]:
    """(s_c, s_b): the size of the costs (with the quadratic's gradient) and of the right-hand side."""
    s_c = float(np.linalg.norm(program.c))
    if program.P is not None:
        upper, x = sp.triu(program.P), solution.x
        s_c += float(np.linalg.norm(upper @ x + upper.T @ x - upper.diagonal() * x))
    s_b = float(np.linalg.norm(program.b))
    return s_c or 1.0, s_b or 1.0


Shift = Callable[[np.ndarray, np.ndarray | None], Solution]


def _finite_step(
    structure: ConeStructure, star: Solution, dx: np.ndarray, dy: np.ndarray | None, tau: float, solve: Shift
) -> tuple[DataGradient | None, dict[int, Solution], int]:
    """LPGD at step tau, central if both sides solve, else one-sided; (grad, solutions, failures)."""
    solutions = {}
    for sign in (1, -1):
        z = solve(sign * tau * dx, None if dy is None else -sign * tau * dy)
        if z.usable:
            solutions[sign] = z
    failures = 2 - len(solutions)
    if not solutions:
        return None, solutions, failures
    side: Side = "central" if failures == 0 else ("lower" if 1 in solutions else "upper")
    return lpgd_item_gradient(structure, star, solutions, LPGD(tau=tau, side=side)), solutions, failures


def _attempts(
    structure: ConeStructure,
    star: Solution,
    dx: np.ndarray,
    dy: np.ndarray | None,
    rels: list[float],
    inv_r: float,
    solve: Shift,
    report: StepReport,
) -> tuple[DataGradient | None, dict[int, Solution]]:
    """The first relative step in ``rels`` whose re-solves work (a failed side counts as weakened)."""
    for k, rel in enumerate(rels):
        grad, solutions, failures = _finite_step(structure, star, dx, dy, rel * inv_r, solve)
        report.failed_solves += failures
        if grad is not None:
            report.weakened |= failures > 0 or k > 0
            return grad, solutions
    return None, {}


def _moved(before: np.ndarray, solutions: dict[int, Solution], attr: str, noise: float) -> bool:
    """Whether the perturbed solutions differ from each other (or from z*) beyond solver noise."""
    points = [getattr(z, attr) for z in solutions.values()]
    if len(points) == 1:
        points.append(before)
    return float(np.max(np.abs(points[0] - points[1]), initial=0.0)) > noise * (
        1.0 + float(np.max(np.abs(before), initial=0.0))
    )


def adaptive_item_gradient(
    structure: ConeStructure,
    program: ConeProgram,
    star: Solution,
    dx: np.ndarray,
    dy: np.ndarray | None,
    config: AdaptiveLPGD,
    blocks: Blocks,
    solve: Shift,
) -> tuple[DataGradient | None, StepReport]:
    """One item's AdaptiveLPGD gradient; ``solve(c_shift, b_shift)`` re-solves the perturbed program.

    1. Small step ``config.small`` (near-exact derivative), weakened on failure. Skipped when
       the structure alone shows every block that parameters enter to be degenerate.
    2. Blocks that parameters enter and that the small step leaves degenerate take their
       gradient from the large step ``config.large`` (weakened on failure; if it never works,
       they keep the small step's).
    """
    report = StepReport()
    s_c, s_b = relative_scales(program, star)
    r = float(np.linalg.norm(dx)) / s_c
    if dy is not None:
        r = max(r, float(np.linalg.norm(dy)) / s_b)
    if r == 0.0:
        return zero_gradient(structure), report
    tenth = [10.0**-k for k in range(config.retries + 1)]

    def small_step() -> tuple[DataGradient | None, dict[int, Solution]]:
        return _attempts(structure, star, dx, dy, [config.small * t for t in tenth], 1.0 / r, solve, report)

    def large_step() -> DataGradient | None:
        rels = [config.large * t for t in tenth if config.large * t > config.small]
        return _attempts(structure, star, dx, dy, rels, 1.0 / r, solve, report)[0]

    lp = is_lp(structure)
    by_structure = {"c": lp and bool(np.any(dx)), "b": lp and dy is not None and bool(np.any(dy)), "A": False}
    needed = [key for key in _BLOCKS if getattr(blocks, key)]
    structural = config.detect != "movement" and needed and all(by_structure[k] for k in needed)
    if config.large is not None and structural:
        large = large_step()
        if large is not None:
            return large, report
        report.large_lost = True
        small, _ = small_step()
        report.lost = small is None
        return small, report

    small, solutions = small_step()
    if small is None:
        report.lost = True
        return None, report
    if config.large is None:
        return small, report
    x_static = not _moved(star.x, solutions, "x", config.noise)
    y_static = not _moved(star.y, solutions, "y", config.noise)
    by_movement = {"c": x_static, "b": y_static, "A": x_static and y_static}
    rules = {"structure": (by_structure,), "movement": (by_movement,), "both": (by_structure, by_movement)}
    degenerate = {key: key in needed and any(rule[key] for rule in rules[config.detect]) for key in _BLOCKS}
    if not any(degenerate.values()):
        return small, report
    large = large_step()
    if large is None:
        report.large_lost = True
        return small, report
    return DataGradient(
        A=large.A if degenerate["A"] else small.A,
        b=large.b if degenerate["b"] else small.b,
        c=large.c if degenerate["c"] else small.c,
        P=(large.P if degenerate["c"] else small.P) if small.P is not None else None,
    ), report


def zero_gradient(structure: ConeStructure) -> DataGradient:
    """The zero data gradient (an item whose outputs receive no gradient)."""
    return DataGradient(
        A=np.zeros(structure.A.nnz),
        b=np.zeros(structure.m),
        c=np.zeros(structure.n),
        P=None if structure.P is None else np.zeros(structure.P.nnz),
    )
