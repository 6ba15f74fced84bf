"""SCS backend: first-order, warm-startable, keeps its factorization across b/c updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scs

from cvxlpgd.cone import (
    INFEASIBLE,
    INTERRUPTED,
    ITERATION_LIMIT,
    OPTIMAL,
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

# Defaults, which also define the accepted names and types (SCS 3.x settings).
DEFAULTS: dict[str, Any] = {
    "normalize": True,
    "scale": 0.1,
    "adaptive_scale": True,
    "rho_x": 1e-6,
    "max_iters": 100_000,
    "eps_abs": 1e-5,
    "eps_rel": 1e-5,
    "eps_infeas": 1e-7,
    "alpha": 1.5,
    "time_limit_secs": 0.0,
    "verbose": False,
    "acceleration_lookback": 10,
    "acceleration_interval": 10,
    "linear_solver": "auto",
}


_LINEAR_SOLVERS = frozenset(solver.value for solver in scs.LinearSolver)


def default_linear_solver(program: ConeProgram, eps: float) -> str:
    """QDLDL unless the program is large and dense or the tolerance is very tight. SCS's "auto"
    loads MKL Pardiso where available: measured 1.2-4.8x slower per solve than QDLDL on the
    benchmark problems and on banded sparse LPs up to 10^5 variables, but 1.4-1.8x faster on
    dense QPs with 2.5e5 nonzeros and more (see benchmarks/README.md); and QDLDL's solves are
    not accurate enough for eps below 1e-9 (a 2-variable LP hit max_iters at eps = 1e-10)."""
    nnz = program.A.nnz + (0 if program.P is None else program.P.nnz)
    dense = nnz >= _DENSE_NNZ and nnz >= _DENSE_PER_COLUMN * program.A.shape[1]
    return "auto" if dense or eps < _QDLDL_TIGHTEST else "qdldl"


_DENSE_NNZ = 200_000
_DENSE_PER_COLUMN = 50
_QDLDL_TIGHTEST = 1e-9


def scs_status(info: Mapping[str, Any]) -> str:
    """The normalized status of an SCS result `info` (also what diffcp returns when it runs SCS)."""
    value = info["status_val"]
    if value == 1:
        return OPTIMAL
    if value == 2:
        # "solved (inaccurate)" comes at a limit, even at max_iters = 2 with an iterate far from
        # feasible: a cut-off iterate, for accuracy.judged to accept or refuse by its residuals.
        return ITERATION_LIMIT
    if value in (-2, -7):
        return INFEASIBLE
    if value in (-1, -6):
        return UNBOUNDED
    if value == -5:  # SCS catches SIGINT itself and stops with this status
        return INTERRUPTED
    return SOLVER_ERROR


def cone_dict(dims: ConeDims) -> dict[str, Any]:
    return {
        "z": dims.zero,
        "l": dims.nonneg,
        "q": list(dims.soc),
        "s": list(dims.psd),
        "ep": dims.exp,
        "p": list(dims.power),
    }


class ScsSolver:
    name = "SCS"
    canon_solver = "SCS"
    mixed_integer = False
    cones = ALL_CONES
    # SCS adapts its step scale during a solve and keeps it: a workspace that has solved once
    # needs 2-3x the iterations on the next program, even the same item perturbed (dense LP:
    # 525 vs 225 fresh), which costs more than the setup it saves. So every solve is fresh.
    reuses_workspace = False
    tightest_eps = TIGHTEST_EPS
    diffcp = DiffcpMethod("SCS", warm_starts=True, status=scs_status)

    def __init__(self, solver_args: Mapping[str, Any]):
        common, own = split_common("SCS", solver_args)
        settings = check_settings("SCS", own, types_of(DEFAULTS), {"linear_solver": _LINEAR_SOLVERS})
        if "eps" in common:
            settings.setdefault("eps_abs", common["eps"])
            settings.setdefault("eps_rel", common["eps"])
        if "max_iters" in common:
            settings.setdefault("max_iters", common["max_iters"])
        if "verbose" in common:
            settings.setdefault("verbose", common["verbose"])
        base = {k: DEFAULTS[k] for k in ("eps_abs", "eps_rel", "max_iters", "verbose")}
        self.settings = {**base, **settings}

    @property
    def eps(self) -> float:
        return max(self.settings["eps_abs"], self.settings["eps_rel"])

    def settings_for(self, program: ConeProgram, eps: float | None = None) -> dict[str, Any]:
        """The settings one solve of ``program`` uses: tolerances tightened to ``eps`` and, unless
        the user chose a linear solver, the one for its size and tolerance."""
        settings = dict(self.settings)
        for key in ("eps_abs", "eps_rel"):
            settings[key] = tightened(settings[key], eps)
        tightest = min(settings["eps_abs"], settings["eps_rel"])
        settings.setdefault("linear_solver", default_linear_solver(program, tightest))
        return settings

    def _build(self, program: ConeProgram, settings: Mapping[str, Any]) -> scs.SCS:
        data = {"A": program.A, "b": program.b, "c": program.c}
        if program.P is not None:
            data["P"] = program.P
        return scs.SCS(data, cone_dict(program.dims), **settings)

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
        eps: float | None = None,
    ) -> Solution:
        del workspace  # never reused: see reuses_workspace
        settings = self.settings_for(program, eps)
        solver = self._build(program, settings)
        if warm_start is not None:
            result = solver.solve(True, warm_start.x, warm_start.y, warm_start.s)
        else:
            result = solver.solve(False, None, None, None)
        info = result["info"]
        x, y, s = (np.asarray(result[key]) for key in ("x", "y", "s"))
        tolerance = max(settings["eps_abs"], settings["eps_rel"])
        return Solution(
            x=x,
            y=y,
            s=s,
            status=judged(program, scs_status(info), x, y, s, tolerance),
            solver_status=info["status"],
            iterations=int(info["iter"]),
        )
