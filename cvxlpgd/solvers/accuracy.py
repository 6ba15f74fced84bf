"""Whether an iterate a solver returned without converging is close enough to use.

A solver that stops at an iteration or time limit says little with its label: SCS reports
"solved (inaccurate)" at ``max_iters=2`` with an iterate far outside the feasible set. So such an
iterate is judged by its own residuals, relative to the data (as SCS measures its own): primal
``Ax + s - b``, dual ``Px + A'y + c``, the duality gap, and the distance of ``s`` from the cone
and of ``y`` from the dual cone. Within ``max(eps, INACCURATE_TOLERANCE)`` it is a usable,
inaccurate solution (the layer warns, as CVXPY does); otherwise the item failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import ITERATION_LIMIT, OPTIMAL_INACCURATE, ConeDims, ConeProgram

# The relative residual up to which a cut-off iterate still counts as a solution (or the solve's
# own tolerance where looser). Measured: SCS's iterates in cvxpylayers' constrained-LQR example
# (eps 1e-8, max_iters 10,000, through diffcp) stop at up to 1.2e-4; at max_iters = 2 they are
# off by 1e-1 and more.
INACCURATE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Residuals:
    """Relative residuals of an iterate ``(x, y, s)`` of a ``ConeProgram``."""

    primal: float
    dual: float
    gap: float
    cone: float  # of s from K and y from K*, on the zero, nonnegative and second-order cones

    @classmethod
    def of(cls, program: ConeProgram, x: np.ndarray, y: np.ndarray, s: np.ndarray) -> Residuals:
        A, b, c = program.A, program.b, program.c
        Ax, ATy = A @ x, A.T @ y
        Px = _symmetric(program.P) @ x if program.P is not None else np.zeros_like(x)
        xPx, cx, by = float(x @ Px), float(c @ x), float(b @ y)
        return cls(
            primal=_relative(Ax + s - b, Ax, s, b),
            dual=_relative(Px + ATy + c, Px, ATy, c),
            gap=abs(xPx + cx + by) / (1.0 + max(abs(xPx), abs(cx), abs(by))),
            cone=_cone_distance(program.dims, s, y) / (1.0 + max(_norm(s), _norm(y))),
        )

    @property
    def largest(self) -> float:
        return max(self.primal, self.dual, self.gap, self.cone)


def judged(program: ConeProgram, status: str, x: np.ndarray, y: np.ndarray, s: np.ndarray, eps: float) -> str:
    """``status``, except that an iterate cut off at a limit (``ITERATION_LIMIT``) becomes
    ``OPTIMAL_INACCURATE`` where it is within ``max(eps, INACCURATE_TOLERANCE)`` of optimal by its
    relative residuals; a non-finite iterate is never usable."""
    if status != ITERATION_LIMIT or not all(np.isfinite(v).all() for v in (x, y, s)):
        return status
    close = Residuals.of(program, x, y, s).largest <= max(eps, INACCURATE_TOLERANCE)
    return OPTIMAL_INACCURATE if close else ITERATION_LIMIT


def _norm(v: np.ndarray) -> float:
    return float(np.abs(v).max(initial=0.0))


def _relative(residual: np.ndarray, *terms: np.ndarray) -> float:
    return _norm(residual) / (1.0 + max(_norm(t) for t in terms))


def _symmetric(P: sp.csc_array) -> sp.csc_array:
    """The full matrix of ``P``'s upper triangle."""
    upper = sp.triu(P)
    return sp.csc_array(upper + upper.T - sp.diags(upper.diagonal()))


def _cone_distance(dims: ConeDims, s: np.ndarray, y: np.ndarray) -> float:
    """Largest distance of ``s`` from K and of ``y`` from K* over the zero cone (s = 0, y free),
    the nonnegative cone and the second-order cones (both self-dual). The PSD, exponential and
    power cones are not checked (their residuals in ``Ax + s = b`` and the gap still are)."""
    distance = _norm(s[: dims.zero])
    start, stop = dims.zero, dims.zero + dims.nonneg
    distance = max(distance, _norm(np.minimum(s[start:stop], 0)), _norm(np.minimum(y[start:stop], 0)))
    for size in dims.soc:
        start, stop = stop, stop + size
        distance = max(distance, _soc_distance(s[start:stop]), _soc_distance(y[start:stop]))
    return distance


def _soc_distance(v: np.ndarray) -> float:
    """Distance of ``v = (t, z)`` from the second-order cone ``||z|| <= t``."""
    t, z = v[0], np.linalg.norm(v[1:])
    if z <= t:
        return 0.0
    if z <= -t:
        return float(np.linalg.norm(v))
    return float((z - t) / np.sqrt(2.0))
