"""LPGD: gradients from a re-solve of the conic program with costs perturbed by the incoming
gradient (Paulus, Martius & Musil, ICML 2024). See DESIGN.md section 3 for the formulas.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    return replace(program, b=b, c=c, P=P_rho)


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
    zero = DataGradient(
        A=np.zeros(s.A.nnz), b=np.zeros(s.m), c=np.zeros(s.n), P=None if s.P is None else np.zeros(s.P.nnz)
    )
    grads = [zero if g is None else g for g in grads]
    return DataGradient(
        A=np.stack([g.A for g in grads]),
        b=np.stack([g.b for g in grads]),
        c=np.stack([g.c for g in grads]),
        P=None if s.P is None else np.stack([g.P for g in grads]),
    )
