"""Clarabel backend: interior point, accurate; keeps its symbolic analysis across b/c updates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import clarabel
import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import (
    INFEASIBLE,
    ITERATION_LIMIT,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    SOLVER_ERROR,
    UNBOUNDED,
    ConeDims,
    ConeProgram,
    Solution,
)
from cvxlpgd.solvers.accuracy import judged
from cvxlpgd.solvers.base import (
    ALL_CONES,
    TIGHTEST_EPS,
    DiffcpMethod,
    Workspace,
    check_settings,
    split_common,
    tightened,
    types_of,
)

_DEFAULT_SETTINGS = clarabel.DefaultSettings()
DEFAULTS: dict[str, Any] = {
    name: getattr(_DEFAULT_SETTINGS, name)
    for name in dir(_DEFAULT_SETTINGS)
    if not name.startswith("_") and not callable(getattr(_DEFAULT_SETTINGS, name))
}

_STATUS = {
    "Solved": OPTIMAL,
    "AlmostSolved": OPTIMAL_INACCURATE,
    "PrimalInfeasible": INFEASIBLE,
    "AlmostPrimalInfeasible": INFEASIBLE,
    "DualInfeasible": UNBOUNDED,
    "AlmostDualInfeasible": UNBOUNDED,
    "MaxIterations": ITERATION_LIMIT,
    "MaxTime": ITERATION_LIMIT,
}


def _cost_scale(program: ConeProgram) -> int | None:
    """The binary exponent of a quadratic objective's largest cost where it exceeds ``P``'s
    largest entry; None where it does not (costs that do not dominate the curvature, such as an
    LPGD perturbation of zero costs) and for a linear objective. What a shared solver for this
    program is built for (see ``_template``)."""
    if program.P is None:
        return None
    largest = float(np.abs(program.c).max(initial=0.0))
    if largest <= float(np.abs(program.P.data).max(initial=0.0)):
        return None
    return math.frexp(largest)[1]


def _template(program: ConeProgram, cost_scale: int | None) -> ConeProgram:
    """What a shared solver is built from: ``program``'s structure, zero ``b`` and costs of
    magnitude ``2 ** cost_scale`` (zero for ``None``). Clarabel scales a problem at setup by ``P``
    and ``A`` and, for a quadratic objective, by its costs' magnitude. Built from the first item
    it meets, a shared solver made every later item depend on that one (6e-7 in x); built from
    zero costs, it solved QPs with large costs less accurately (LPGD gradients 600x off); built
    for each solve, it cost 1.2-1.3x the forward. Built from costs of the item's own magnitude
    class, its state after an update is a function of the structure and of that item alone."""
    costs = np.zeros_like(program.c) if cost_scale is None else np.full_like(program.c, 2.0**cost_scale)
    return ConeProgram(A=program.A, b=np.zeros_like(program.b), c=costs, dims=program.dims, P=program.P)


def cones(dims: ConeDims) -> list:
    out: list = []
    if dims.zero:
        out.append(clarabel.ZeroConeT(dims.zero))
    if dims.nonneg:
        out.append(clarabel.NonnegativeConeT(dims.nonneg))
    out += [clarabel.SecondOrderConeT(k) for k in dims.soc]
    out += [clarabel.PSDTriangleConeT(k) for k in dims.psd]
    out += [clarabel.ExponentialConeT() for _ in range(dims.exp)]
    out += [clarabel.PowerConeT(a) for a in dims.power]
    return out


_TOLERANCES = ("tol_gap_abs", "tol_gap_rel", "tol_feas")

# diffcp reports Clarabel's status in SCS's words; its iteration limit only as "Failure".
_DIFFCP_STATUS = {
    "solved": OPTIMAL,
    "optimal inaccurate": OPTIMAL_INACCURATE,
    "infeasible": INFEASIBLE,
    "infeasible inaccurate": INFEASIBLE,
    "unbounded": UNBOUNDED,
    "unbounded inaccurate": UNBOUNDED,
}


def diffcp_status(info: Mapping[str, Any]) -> str:
    """The normalized status of a Clarabel solve that diffcp ran."""
    return _DIFFCP_STATUS.get(str(info["status"]).lower(), SOLVER_ERROR)


@dataclass
class _Shared:
    """A solver kept in a workspace, and the tolerances it was last set to."""

    solver: clarabel.DefaultSolver
    tolerances: tuple[float, ...]


class ClarabelSolver:
    name = "CLARABEL"
    canon_solver = "CLARABEL"
    mixed_integer = False
    cones = ALL_CONES
    # Keeps its solvers (with their symbolic analysis) across a chunk's items and their LPGD
    # re-solves: one per magnitude class of the costs (see _cost_scale and _template).
    reuses_workspace = True
    tightest_eps = TIGHTEST_EPS
    diffcp = DiffcpMethod("Clarabel", warm_starts=False, status=diffcp_status)

    def __init__(self, solver_args: Mapping[str, Any]):
        common, own = split_common("CLARABEL", solver_args)
        self.settings = check_settings("CLARABEL", own, types_of(DEFAULTS))
        if "eps" in common:
            for key in _TOLERANCES:
                self.settings.setdefault(key, common["eps"])
        if "max_iters" in common:
            self.settings.setdefault("max_iter", common["max_iters"])
        if "verbose" in common:
            self.settings.setdefault("verbose", common["verbose"])

    @property
    def eps(self) -> float:
        return max(self.settings.get(key, DEFAULTS[key]) for key in _TOLERANCES)

    def _settings(self, eps: float | None) -> clarabel.DefaultSettings:
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.presolve_enable = False  # keeps b updates valid for every program
        for key, value in self.settings.items():
            setattr(settings, key, value)
        for key in _TOLERANCES:
            setattr(settings, key, tightened(getattr(settings, key), eps))
        return settings

    def _build(self, program: ConeProgram, settings: clarabel.DefaultSettings) -> clarabel.DefaultSolver:
        n = program.c.size
        P = program.P if program.P is not None else sp.csc_array((n, n))
        return clarabel.DefaultSolver(P, program.c, program.A, program.b, cones(program.dims), settings)

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
        eps: float | None = None,
    ) -> Solution:
        del warm_start  # an interior-point method cannot use one
        settings = self._settings(eps)
        tolerances = tuple(getattr(settings, key) for key in _TOLERANCES)
        if workspace is None:
            solver = self._build(program, settings)
        else:
            key = ("clarabel", _cost_scale(program))
            if key not in workspace:
                workspace[key] = _Shared(self._build(_template(program, key[1]), settings), tolerances)
            shared = workspace[key]
            solver = shared.solver
            # Every item's data go in by update, the first one's too (see _template).
            solver.update(q=program.c, b=program.b)
            if shared.tolerances != tolerances:  # each re-solve may ask for its own
                solver.update(settings=settings)
                shared.tolerances = tolerances
        result = solver.solve()
        raw = str(result.status)
        x, y, s = np.asarray(result.x), np.asarray(result.z), np.asarray(result.s)
        return Solution(
            x=x,
            y=y,
            s=s,
            status=judged(program, _STATUS.get(raw, SOLVER_ERROR), x, y, s, max(tolerances)),
            solver_status=raw,
            iterations=int(result.iterations),
        )
