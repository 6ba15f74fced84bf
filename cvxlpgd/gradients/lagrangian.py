"""LPGD's formulas, as pure functions of conic data and solutions (docs/design.md, section 3).

The perturbed program for sign s:  P + rho I,  c + s tau dx - rho x*,  b - s tau dy;  same A and cones.
The Lagrangian gradient at z = (x, y):  dL/dP = 1/2 x x',  dL/dA = y x',  dL/db = -y,  dL/dc = x.
The estimate for a side:  lower (G(z+) - G(z*)) / tau,  upper (G(z*) - G(z-)) / tau,
central (G(z+) - G(z-)) / (2 tau), or with unequal steps (G(z+) - G(z-)) / (tau+ + tau-).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import ConeProgram, Solution
from cvxlpgd.program import ConeStructure, DataGradient

Side = Literal["central", "lower", "upper"]
# The signs of the perturbed programs each side solves: +1 is c + tau dx, -1 is c - tau dx.
SIGNS: dict[str, tuple[int, ...]] = {"lower": (1,), "upper": (-1,), "central": (1, -1)}
SIDE_NAMES = {1: "lower (+tau)", -1: "upper (-tau)"}


@dataclass(frozen=True)
class Step:
    """One LPGD finite difference: the perturbation size, the proximal weight and the side.
    ``upper_tau`` (None: ``tau``) is the step of the upper side (c - tau dx) when it differs:
    a central difference with unequal steps is the secant between the two perturbed points,
    ``(G(z+) - G(z-)) / (tau + upper_tau)``."""

    tau: float
    rho: float = 0.0
    side: Side = "central"
    upper_tau: float | None = None

    def tau_of(self, sign: int) -> float:
        """The step of the side of ``sign``."""
        return self.tau if sign == 1 or self.upper_tau is None else self.upper_tau

    def one_sided(self, sign: int) -> Step:
        """The same step on the side of ``sign`` only."""
        return Step(self.tau_of(sign), self.rho, "lower" if sign == 1 else "upper")

    def scaled(self, factor: float) -> Step:
        """The same step, ``factor`` times as long on each side."""
        upper = None if self.upper_tau is None else self.upper_tau * factor
        return replace(self, tau=self.tau * factor, upper_tau=upper)


def lagrangian_gradient(structure: ConeStructure, x: np.ndarray, y: np.ndarray) -> DataGradient:
    """G(z): dL/dP = 1/2 x x' (upper triangle storage), dL/dA = y x', dL/db = -y, dL/dc = x."""
    A = y[structure.A.indices] * x[structure.A.columns]
    P = None
    if structure.P is not None:
        rows, cols = structure.P.indices, structure.P.columns
        P = x[rows] * x[cols] * np.where(rows == cols, 0.5, 1.0)
    return DataGradient(A=A, b=-y, c=x.copy(), P=P)


def proximal_P(P: sp.csc_array | None, n: int, rho: float) -> sp.csc_array | None:
    """P + rho I (upper triangle), the quadratic term of the perturbed programs."""
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
    step: Step,
) -> ConeProgram:
    """P + rho I (given as ``P_rho``),  c + sign tau dx - rho x*,  b - sign tau dy;  same A, cones."""
    tau = step.tau_of(sign)
    c = program.c + sign * tau * dx - step.rho * solution.x
    b = program.b if dy is None else program.b - sign * tau * dy
    return replace(program, b=b, c=c, P=P_rho)


def finite_difference(
    structure: ConeStructure, star: Solution, perturbed: dict[int, Solution], step: Step
) -> DataGradient:
    """Combine the forward solution and the perturbed solutions by the step's side."""
    by_sign = {s: lagrangian_gradient(structure, z.x, z.y) for s, z in perturbed.items()}
    if step.side == "central":
        return by_sign[1].scaled_difference(by_sign[-1], 1.0 / (step.tau + step.tau_of(-1)))
    at_star = lagrangian_gradient(structure, star.x, star.y)
    if step.side == "lower":
        return by_sign[1].scaled_difference(at_star, 1.0 / step.tau)
    return at_star.scaled_difference(by_sign[-1], 1.0 / step.tau_of(-1))
