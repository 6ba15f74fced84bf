"""Gurobi backend (optional: needs ``gurobipy``): simplex for LPs and QPs (LPGD's re-solves with
``rho > 0``), branch and cut for mixed-integer LPs.

Most decision-focused-learning users solve with Gurobi already (PyEPO's default), and its MILP
solves are several times faster than HiGHS's. One Gurobi model is kept per chunk (in the
caller's workspace, with its own environment: Gurobi environments may not be used by two threads
at once), and only changed costs and right-hand sides are passed in. An item's forward solve
starts cold, so that its result depends on that item alone; its LPGD re-solves start from its own
final basis (LPs) or its own solution as a MIP start (MILPs), both kept in ``Solution``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import gurobipy as gp
import numpy as np
import scipy.sparse as sp
from gurobipy import GRB

from cvxlpgd.cone import (
    INFEASIBLE,
    INTERRUPTED,
    ITERATION_LIMIT,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    SOLVER_ERROR,
    UNBOUNDED,
    ConeProgram,
    Solution,
)
from cvxlpgd.solvers.base import (
    SimplexBackend,
    Workspace,
    check_cones,
    check_settings,
    kept_model,
    split_common,
)
from cvxlpgd.solvers.highs_bounds import BoundRows, ColumnBounds


class GurobiLicenseError(RuntimeError):
    """Gurobi refused to run: no valid license, or a model beyond the license's size limit."""


# The layer runs items in parallel itself, one Gurobi thread each (a branch and cut also depends
# on the thread count, so results would otherwise depend on the executor).
_BASE_PARAMS: dict[str, Any] = {"OutputFlag": 0, "Threads": 1}
# What eps sets; each only ever tightened, never below Gurobi's own floor.
_TOLERANCES = ("FeasibilityTol", "OptimalityTol", "IntFeasTol", "BarConvTol")
_ITERATION_LIMITS = ("IterationLimit", "BarIterLimit")
_LICENSE_ERRORS = frozenset({GRB.Error.NO_LICENSE, GRB.Error.SIZE_LIMIT_EXCEEDED})
# Gurobi's Method values: from a basis, the simplex that keeps it feasible (primal when only the
# costs changed since it was optimal, as in LPGD's re-solves for a cost parameter; dual otherwise).
_PRIMAL, _DUAL = 0, 1

_STATUS = {
    GRB.OPTIMAL: OPTIMAL,
    GRB.SUBOPTIMAL: OPTIMAL_INACCURATE,
    GRB.INFEASIBLE: INFEASIBLE,
    GRB.UNBOUNDED: UNBOUNDED,
    GRB.INTERRUPTED: INTERRUPTED,
}
# Stops on a limit the user set: a MIP incumbent found by then is usable, an LP iterate is not.
_LIMITS = frozenset(
    {
        GRB.ITERATION_LIMIT,
        GRB.NODE_LIMIT,
        GRB.TIME_LIMIT,
        GRB.SOLUTION_LIMIT,
        GRB.CUTOFF,
        GRB.USER_OBJ_LIMIT,
        GRB.WORK_LIMIT,
        GRB.MEM_LIMIT,
    }
)
_STATUS_NAMES = {getattr(GRB.Status, name): name for name in dir(GRB.Status) if name.isupper()}


def _license_error(error: gp.GurobiError, program: ConeProgram | None = None) -> GurobiLicenseError:
    m, n = (0, 0) if program is None else program.A.shape
    size = "" if program is None else f" (this model: {n} variables, {m} constraint rows)"
    return GurobiLicenseError(
        f"GUROBI cannot run: {error}{size}. gurobipy's pip wheel carries a size-limited license "
        "(at most 2000 variables and 2000 constraints); for larger models install a full Gurobi "
        "license (free for academics: https://www.gurobi.com/academia/), or use solver='HIGHS'."
    )


def _started_env(params: tuple[tuple[str, Any], ...]) -> gp.Env:
    """A quiet Gurobi environment with ``params`` set (license errors named with their remedy)."""
    env = gp.Env(empty=True)
    for key, value in params:
        env.setParam(key, value)
    try:
        env.start()
    except gp.GurobiError as error:
        raise _license_error(error) from error
    return env


class ParamInfo(NamedTuple):
    """What Gurobi says of one of its parameters."""

    kind: type
    minimum: Any
    default: Any


@functools.cache
def param_info() -> dict[str, ParamInfo]:
    """Gurobi's parameters by name (read once, from a started environment)."""
    model = gp.Model(env=_started_env(tuple(_BASE_PARAMS.items())))
    info = {}
    for name in dir(GRB.Param):
        if not name.startswith("_"):
            _, kind, _, minimum, _, default = model.getParamInfo(name)
            info[name] = ParamInfo(kind, minimum, default)
    return info


@functools.lru_cache(maxsize=64)
def _rejected_param(params: tuple[tuple[str, Any], ...]) -> str | None:
    """Gurobi's refusal of the first parameter out of its range, tried once per set of settings."""
    probe = gp.Env(empty=True)
    for key, value in params:
        try:
            probe.setParam(key, value)
        except gp.GurobiError as error:
            return str(error)
    return None


_per_thread = threading.local()


def _thread_env(params: tuple[tuple[str, Any], ...]) -> gp.Env:
    """This thread's environment for solves without a workspace (built, solved and dropped within
    one call on one thread, so never shared between threads)."""
    envs = _per_thread.__dict__.setdefault("envs", {})
    if params not in envs:
        envs[params] = _started_env(params)
    return envs[params]


class GurobiSolver(SimplexBackend):
    name = "GUROBI"

    def __init__(self, solver_args: Mapping[str, Any]):
        common, own = split_common("GUROBI", solver_args)
        known = param_info()
        spelled = {name.lower(): name for name in known}  # Gurobi's names are case-insensitive
        own = {spelled.get(key.lower(), key): value for key, value in own.items()}
        self.settings = check_settings("GUROBI", own, {name: info.kind for name, info in known.items()})
        if "eps" in common:
            for key in _TOLERANCES:
                tightened = min(common["eps"], known[key].default)
                self.settings.setdefault(key, max(tightened, known[key].minimum))
        if "max_iters" in common:
            self.settings.setdefault("IterationLimit", float(common["max_iters"]))
            self.settings.setdefault("BarIterLimit", common["max_iters"])
        if "verbose" in common:
            self.settings.setdefault("OutputFlag", int(common["verbose"]))
        self._params = tuple(sorted({**_BASE_PARAMS, **self.settings}.items()))
        rejected = _rejected_param(self._params)
        if rejected is not None:
            raise ValueError(f"GUROBI rejected a setting: {rejected}.")

    def _build(self, program: ConeProgram, kept: bool) -> _Model:
        """A model of ``program``, in an environment of its own when a workspace keeps it."""
        check_cones(self.name, self.cones, program.dims)
        env = _started_env(self._params) if kept else _thread_env(self._params)
        model = _Model.build(env, program)
        if program.integrality is None and "Presolve" not in self.settings:
            # Every LP solve starts cold or from a basis, where presolve costs more than it
            # saves: 0.30 against 0.22 ms a solve on the 5 x 5 grid path. A branch and cut keeps it.
            model.grb.Params.Presolve = 0
        return model

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
        eps: float | None = None,
    ) -> Solution:
        del eps  # a vertex is exact: see SimplexBackend
        kept = workspace is not None
        model: _Model = kept_model(workspace, "gurobi", program, lambda p: self._build(p, kept))
        model.start_from(warm_start, program, choose_method="Method" not in self.settings)
        try:
            model.grb.optimize()
            if model.grb.Status == GRB.INF_OR_UNBD:  # presolve could not tell which: ask again
                model.grb.Params.DualReductions = 0
                model.grb.optimize()
                model.grb.Params.DualReductions = self.settings.get("DualReductions", 1)
        except gp.GurobiError as error:
            if error.errno in _LICENSE_ERRORS:
                raise _license_error(error, program) from error
            return _failed(program, SOLVER_ERROR, f"GurobiError {error.errno}: {error}")
        return model.solution(program)


@dataclass(frozen=True)
class _Basis:
    """A final simplex basis (``Solution.basis`` of a Gurobi LP solve): Gurobi's VBasis and CBasis
    codes (plain arrays, so that it pickles to the worker running the item's re-solves), and the
    right-hand side it was optimal for, which decides the simplex a re-solve continues with."""

    columns: np.ndarray
    rows: np.ndarray
    b: np.ndarray


@dataclass
class _Model:
    """A Gurobi model of one conic program's structure: bound rows as column bounds, the other
    rows as constraints; ``update`` swaps in another program's costs and right-hand sides."""

    grb: gp.Model
    x: gp.MVar
    rows: gp.MConstr
    bounds: BoundRows
    lower: np.ndarray  # column bounds that are not rows of A (mixed-integer problems)
    upper: np.ndarray
    c: np.ndarray
    b: np.ndarray
    columns: ColumnBounds  # what b makes of the bound rows

    @classmethod
    def build(cls, env: gp.Env, program: ConeProgram) -> _Model:
        n, integrality = program.c.size, program.integrality
        if integrality is not None and program.P is not None:
            raise ValueError(
                "GUROBI is used here for mixed-integer problems with linear objectives only (for LPGD: "
                "use rho=0, since rho > 0 adds a quadratic term)."
            )
        lower = np.full(n, -np.inf) if integrality is None else integrality.lower
        upper = np.full(n, np.inf) if integrality is None else integrality.upper
        bounds = BoundRows.of(program)
        columns = bounds.column_bounds(program.b, lower, upper)
        grb = gp.Model(env=env)
        vtype = np.full(n, GRB.CONTINUOUS)
        if integrality is not None:
            vtype[integrality.integer] = GRB.INTEGER
        x = grb.addMVar(n, lb=columns.lower, ub=columns.upper, vtype=vtype)
        kept = bounds.kept
        sense = np.where(kept < program.dims.zero, GRB.EQUAL, GRB.LESS_EQUAL)
        rows = grb.addMConstr(sp.csr_array(program.A)[kept], x, sense, program.b[kept])
        if program.P is None:
            x.Obj = program.c
        else:
            upper_P = sp.triu(program.P)  # 1/2 x'Px with P's upper triangle: the full symmetric P
            full = sp.csr_array(upper_P + upper_P.T - sp.diags(upper_P.diagonal()))
            grb.setMObjective(0.5 * full, program.c, 0.0, x, x, x, GRB.MINIMIZE)
        return cls(grb, x, rows, bounds, lower, upper, program.c.copy(), program.b.copy(), columns)

    def update(self, program: ConeProgram) -> None:
        """Change what differs from the program Gurobi holds."""
        if not np.array_equal(program.c, self.c):
            self.x.Obj = program.c
            self.c = program.c.copy()
        if not np.array_equal(program.b, self.b):
            self.b = program.b.copy()
            self.columns = self.bounds.column_bounds(self.b, self.lower, self.upper)
            self.x.LB, self.x.UB = self.columns.lower, self.columns.upper
            self.rows.RHS = self.b[self.bounds.kept]

    def start_from(self, warm_start: Solution | None, program: ConeProgram, choose_method: bool) -> None:
        """Cold, unless this item's own earlier solution is given: its basis (LP) or its point
        as a MIP start, so that no item's result depends on its batch neighbours."""
        self.grb.reset(1)  # drops the last item's basis and MIP start
        if warm_start is None or not warm_start.usable:
            if choose_method:
                self.grb.Params.Method = -1
            return
        if program.integrality is not None:
            self.x.Start = warm_start.x
        elif isinstance(warm_start.basis, _Basis):
            start = warm_start.basis
            self.x.VBasis, self.rows.CBasis = start.columns, start.rows
            if choose_method:
                self.grb.Params.Method = _PRIMAL if np.array_equal(start.b, program.b) else _DUAL

    def solution(self, program: ConeProgram) -> Solution:
        """The solution Gurobi holds for ``program``, the one it was just given."""
        grb, bounds, b = self.grb, self.bounds, program.b
        raw, mixed_integer = grb.Status, program.integrality is not None
        if raw in _LIMITS:
            status = OPTIMAL_INACCURATE if mixed_integer and grb.SolCount > 0 else ITERATION_LIMIT
        else:
            status = _STATUS.get(raw, SOLVER_ERROR)
        iterations = int(grb.IterCount + grb.BarIterCount)
        solver_status = _STATUS_NAMES.get(raw, str(raw))
        if status not in (OPTIMAL, OPTIMAL_INACCURATE):
            return _failed(program, status, solver_status, iterations)
        x = np.asarray(self.x.X, dtype=np.float64)
        s = np.empty(b.size)
        s[bounds.kept] = self.rows.Slack
        s[bounds.rows] = bounds.slack(b, x)
        basis = None
        if mixed_integer:  # constraint duals are not defined: zeros (no gradient uses them)
            y = np.zeros(b.size)
        else:
            # Gurobi: c + Px - A'pi - rc = 0;  cvxlpgd: c + Px + A'y = 0 with y >= 0 on A_i x <= b_i.
            y = np.empty(b.size)
            y[bounds.kept] = -np.asarray(self.rows.Pi)
            y[bounds.rows] = bounds.duals(self.columns, np.asarray(self.x.RC))
            if program.P is None:
                basis = _Basis(np.asarray(self.x.VBasis), np.asarray(self.rows.CBasis), self.b)
        return Solution(x, y, s, status, solver_status, iterations, basis)


def _failed(program: ConeProgram, status: str, solver_status: str, iterations: int = 0) -> Solution:
    m, n = program.A.shape
    nan_m = np.full(m, np.nan)
    return Solution(np.full(n, np.nan), nan_m, nan_m.copy(), status, solver_status, iterations)
