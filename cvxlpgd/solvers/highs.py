"""HiGHS backend: dual simplex for LPs, branch and bound for mixed-integer LPs.

A simplex solver ends on a vertex with a basis, and a re-solve after a change of costs or
right-hand sides can start from a basis: the LPGD re-solves (and ``warm_start=True`` calls) start
from the item's own earlier basis (kept in ``Solution.basis``; 2.5x fewer pivots than cold on the
12 x 12 grid path, tests/test_highs.py). The forward solves of a chunk start cold, without
presolve, so that an item's result depends on that item alone; a start from the previous item's
basis did not pay. Per item at batch 128, forward + default backward, against that start with
presolve: 12 x 12 grid path 3.5 vs 4.3 ms, 5 x 5 path 0.92 vs 1.13 ms, dense LP 50 x 20 1.6 vs
2.1 ms. One HiGHS model per chunk is kept, and only changed costs and bounds are passed in.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import (
    INFEASIBLE,
    ITERATION_LIMIT,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    SOLVER_ERROR,
    UNBOUNDED,
    ConeProgram,
    Solution,
)
from cvxlpgd.solvers.accuracy import judged
from cvxlpgd.solvers.base import (
    SimplexBackend,
    Workspace,
    check_cones,
    check_settings,
    split_common,
    types_of,
)
from cvxlpgd.solvers.highs_bounds import BoundRows, ColumnBounds


def _construct_once_quietly() -> None:
    """HiGHS prints a banner to file descriptor 1 (past ``sys.stdout``, so into a notebook's
    output too) the first time a process constructs a ``Highs``: do that once here, into /dev/null."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


_construct_once_quietly()
_DEFAULT_OPTIONS = highspy.HighsOptions()
DEFAULTS: dict[str, Any] = {
    name: getattr(_DEFAULT_OPTIONS, name)
    for name in dir(_DEFAULT_OPTIONS)
    if not name.startswith("_") and not callable(getattr(_DEFAULT_OPTIONS, name))
}
# The layer runs items in parallel itself, one HiGHS thread each (see HighsSolver._run).
_BASE_OPTIONS: dict[str, Any] = {"output_flag": False, "threads": 1}
_TOLERANCES = (
    "primal_feasibility_tolerance",
    "dual_feasibility_tolerance",
    "ipm_optimality_tolerance",
    "mip_feasibility_tolerance",
)
_ITERATION_LIMITS = ("simplex_iteration_limit", "ipm_iteration_limit", "qp_iteration_limit")
# HiGHS's simplex_strategy values. A basis that was optimal stays primal feasible when only the
# costs change (LPGD's re-solves for a cost parameter) and dual feasible when only b changes, so
# a solve from a basis continues with the simplex that keeps it feasible (12 x 12 grid shortest
# path, from another item's basis: 82 primal pivots, 104 dual, 2.0 against 2.8 ms).
_PRIMAL, _DUAL = 4, 1
# An LP with many dense rows that starts cold, or from a basis optimal for costs far from its
# own, runs HiGHS's interior point method with crossover (which ends on a vertex with a basis, as
# the simplex does). Cold solves in the layer, CPU s, simplex against interior point: the LP of
# cvxpylayers #75 (625 dense rows, 5643 columns; benchmarks/build_scale.py --part lp75) 10.8-14
# against 8.0-8.3; its generator with 624 rows x 2000 columns 4.3 against 3.4, 300 x 5643 2.1
# against 2.7, 100 x 20,000 1.0 against 2.3; a banded sparse LP of 1.3 million nonzeros
# (benchmarks/problems.py sparse_lp(170_000)) 5.5 against 26. And on the #75 LP, after the
# default gradient's cost steps of relative size 10 and 0.5, as highspy solves of the LP itself:
# 5.1 s cold against 18 s and 14 s for the dual simplex from the forward's basis, and over 100 s
# and 60 s for the primal simplex from it; its small step (1e-3) stays with the basis (about 40
# primal pivots, 1 s in the layer).
DENSE_ROW_NONZEROS = 1000  # a row of the conic matrix with this many entries is dense
DENSE_ROWS = 500  # the dense rows from which an LP takes the interior point method
FAR_COSTS = 0.1  # |c - c_basis| / |c_basis| from which a large LP's basis is not used

_Status = highspy.HighsModelStatus
_STATUS = {
    _Status.kOptimal: OPTIMAL,
    _Status.kModelEmpty: OPTIMAL,
    _Status.kInfeasible: INFEASIBLE,
    # Only reached for LPs when HiGHS cannot tell which; both are failures.
    _Status.kUnboundedOrInfeasible: INFEASIBLE,
    _Status.kUnbounded: UNBOUNDED,
}
# Stops on a limit the user set: a MIP incumbent found by then is usable, an LP iterate is not.
_LIMITS = frozenset(
    {
        _Status.kTimeLimit,
        _Status.kIterationLimit,
        _Status.kSolutionLimit,
        _Status.kObjectiveBound,
        _Status.kObjectiveTarget,
        _Status.kInterrupt,
        _Status.kHighsInterrupt,
    }
)


@functools.lru_cache(maxsize=64)
def _rejected_option(options: tuple[tuple[str, Any], ...]) -> str | None:
    """The first option HiGHS refuses (out of range, unknown string value), tried once per set."""
    probe = highspy.Highs()
    for key, value in options:
        if probe.setOptionValue(key, value) != highspy.HighsStatus.kOk:
            return f"{key}={value!r}"
    return None


class HighsSolver(SimplexBackend):
    name = "HIGHS"

    def __init__(self, solver_args: Mapping[str, Any]):
        common, own = split_common("HIGHS", solver_args)
        self.settings = check_settings("HIGHS", own, types_of(DEFAULTS))
        if "eps" in common:
            # Simplex reaches tight tolerances at no extra cost, so eps only ever tightens them.
            for key in _TOLERANCES:
                self.settings.setdefault(key, min(common["eps"], DEFAULTS[key]))
        if "max_iters" in common:
            for key in _ITERATION_LIMITS:
                self.settings.setdefault(key, common["max_iters"])
        if "verbose" in common:
            self.settings.setdefault("output_flag", common["verbose"])
        self._options = tuple(sorted({**_BASE_OPTIONS, **self.settings}.items()))
        key = "primal_feasibility_tolerance"
        self._tolerance = self.settings.get(key, DEFAULTS[key])
        rejected = _rejected_option(self._options)
        if rejected is not None:
            raise ValueError(f"HIGHS rejected the setting {rejected} (out of range or not an allowed value).")

    def _build(self, program: ConeProgram) -> _Model:
        check_cones(self.name, self.cones, program.dims)
        highs = highspy.Highs()
        for key, value in self._options:
            highs.setOptionValue(key, value)
        n = program.c.size
        integrality = program.integrality
        if integrality is None and "presolve" not in self.settings:
            # Every LP solve starts cold or from a basis, where presolve cost more than it saved:
            # 2.0x on the 5 x 5 and 12 x 12 grid paths, 2.2x on the dense LP, 1.3x on sparse LPs
            # of 2,000 and 20,000 variables. A branch and bound keeps it.
            highs.setOptionValue("presolve", "off")
        bounds = BoundRows.of(program)
        if integrality is None:
            model = _Model(highs, bounds, np.full(n, -np.inf), np.full(n, np.inf))
        else:
            model = _Model(highs, bounds, integrality.lower, integrality.upper)
        A = sp.csc_array(sp.csr_array(program.A)[bounds.kept])
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n, A.shape[0]
        lp.col_cost_ = program.c
        model.set_rhs(program.b)
        lp.row_lower_, lp.row_upper_ = model.row_bounds(program)
        lp.col_lower_, lp.col_upper_ = model.columns.lower, model.columns.upper
        if integrality is not None:
            kinds = np.full(n, highspy.HighsVarType.kContinuous)
            kinds[integrality.integer] = highspy.HighsVarType.kInteger
            lp.integrality_ = list(kinds)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
        highs.passModel(lp)
        model.c = program.c.copy()
        if program.P is not None:
            if integrality is not None:
                raise ValueError(
                    "HIGHS cannot solve a mixed-integer problem with a quadratic objective (for LPGD: "
                    "use rho=0, since rho > 0 adds one)."
                )
            # HiGHS takes the lower triangle column-wise: the transpose of P's upper triangle.
            lower_P = sp.csc_array(sp.triu(program.P).T)
            highs.passHessian(n, lower_P.nnz, 1, lower_P.indptr, lower_P.indices, lower_P.data)
        return model

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
        eps: float | None = None,
    ) -> Solution:
        del eps  # a vertex is exact: see SimplexBackend
        if workspace is not None and "highs" in workspace:
            model = workspace["highs"]
            model.update(program)
        else:
            model = self._build(program)
            if workspace is not None:
                workspace["highs"] = model
        highs, n = model.highs, program.c.size
        mixed_integer = program.integrality is not None
        # Cold, unless this item's own earlier basis is given: a start from the previous item's
        # basis made each result depend on its batch neighbours, and did not pay (module docstring).
        basis = warm_start.basis if warm_start is not None and not mixed_integer else None
        start = basis if isinstance(basis, _Start) else None
        interior = self._interior_point(program, start)
        if interior:
            start = None
        if start is not None:
            highs.setBasis(start.basis.highs)
        else:
            highs.clearSolver()
            if mixed_integer and warm_start is not None and warm_start.usable:
                highs.setSolution(n, _indices(n), warm_start.x)
        self._set_strategy(highs, start, program)
        if "solver" not in self.settings:
            highs.setOptionValue("solver", "ipm" if interior else DEFAULTS["solver"])
        self._run(highs)
        if start is not None and highs.getModelStatus() != _Status.kOptimal:
            # A warm start must not turn a solvable item into a failure: HiGHS can stop with
            # "Unknown" from a basis (2 of 18,000 neighbour starts on random LPs); run it cold.
            iterations = _iteration_count(highs)
            highs.clearSolver()
            self._set_strategy(highs, None, program)
            self._run(highs)
            return model.solution(program, self._tolerance, earlier_iterations=iterations)
        return model.solution(program, self._tolerance)

    def _interior_point(self, program: ConeProgram, start: _Start | None) -> bool:
        """An LP with ``DENSE_ROWS`` dense rows, cold or from a basis ``FAR_COSTS`` away from its
        costs, where the interior point method beats both simplex variants; not where the user
        chose a solver."""
        if "solver" in self.settings or program.integrality is not None or program.P is not None:
            return False
        if not many_dense_rows(program.A):
            return False
        return start is None or np.linalg.norm(program.c - start.c) > FAR_COSTS * np.linalg.norm(start.c)

    def _set_strategy(self, highs: highspy.Highs, start: _Start | None, program: ConeProgram) -> None:
        """From a basis, the simplex that keeps it feasible; cold, HiGHS's default (or the user's)."""
        if "simplex_strategy" in self.settings:
            return
        if start is None:
            highs.setOptionValue("simplex_strategy", DEFAULTS["simplex_strategy"])
        else:
            highs.setOptionValue("simplex_strategy", _PRIMAL if np.array_equal(start.b, program.b) else _DUAL)

    def _run(self, highs: highspy.Highs) -> None:
        """HiGHS keeps one task scheduler per thread, sized by the first run on that thread, and a
        run asking for another size fails before it starts ("Not Set"). Every run here asks for
        one thread (the layer runs items in parallel; and a mixed-integer search depends on the
        thread count, so results would depend on the executor otherwise). On a thread where the
        user's own HiGHS run made a scheduler of another size, it is reset first; and the thread
        that called the layer, the user's, is left without one, so that the user's own solves on
        it (``cp.HIGHS`` with any ``threads``) work afterwards. Every thread is left so, whoever
        owns it (a backend cannot tell the user's threads from an executor's): the reset costs
        about 2 us a run, against HiGHS's fixed 0.13 ms. A size the user chose is kept."""
        if "threads" in self.settings:
            highs.run()
            return
        if highs.run() == highspy.HighsStatus.kError:  # this thread's scheduler has another size
            highspy.Highs.resetThreadScheduler(True)
            highs.run()
        highspy.Highs.resetThreadScheduler(True)


def many_dense_rows(A: sp.csc_array) -> bool:
    """At least ``DENSE_ROWS`` rows of ``DENSE_ROW_NONZEROS`` entries or more (a matrix with
    fewer entries in all is not counted: small LPs pay nothing)."""
    if A.nnz < DENSE_ROWS * DENSE_ROW_NONZEROS:
        return False
    entries_per_row = np.bincount(A.indices, minlength=A.shape[0])
    return int(np.count_nonzero(entries_per_row >= DENSE_ROW_NONZEROS)) >= DENSE_ROWS


# Basis status codes and back, by table: converting each status through int() costs 10x more.
_STATUSES = tuple(highspy.HighsBasisStatus.__members__.values())
_CODES = {status: code for code, status in enumerate(_STATUSES)}


class Basis:
    """A HiGHS basis that pickles, so that a forward solve's basis can travel to the worker that
    runs the item's re-solves: highspy's ``HighsBasis`` does not pickle, so it travels as its
    status codes (and is rebuilt there); in this process it is used as it is, at no cost."""

    __slots__ = ("highs",)

    def __init__(self, highs: highspy.HighsBasis):
        self.highs = highs

    def __reduce__(self) -> tuple:
        b = self.highs
        codes = [bytes(_CODES[status] for status in statuses) for statuses in (b.col_status, b.row_status)]
        return Basis._from_codes, (*codes, b.valid, b.alien, b.was_alien)

    @staticmethod
    def _from_codes(columns: bytes, rows: bytes, valid: bool, alien: bool, was_alien: bool) -> Basis:
        basis = highspy.HighsBasis()
        basis.col_status = [_STATUSES[code] for code in columns]
        basis.row_status = [_STATUSES[code] for code in rows]
        basis.valid, basis.alien, basis.was_alien = valid, alien, was_alien
        return Basis(basis)


@functools.lru_cache(maxsize=32)
def _indices(k: int) -> np.ndarray:
    """0..k-1 as HiGHS's index type, for changing every cost or bound at once."""
    return np.arange(k, dtype=np.int32)


@dataclass(frozen=True)
class _Start:
    """A final simplex basis (``Solution.basis`` of a HiGHS LP solve) and the right-hand side
    it was optimal for, which decides the simplex that a re-solve from it continues with, and
    the costs, whose distance decides whether a large LP uses it (``FAR_COSTS``)."""

    basis: Basis
    b: np.ndarray
    c: np.ndarray


@dataclass
class _Model:
    """A HiGHS model of one conic program's structure: bound rows as column bounds, the other
    rows as rows; ``update`` swaps in another program's costs and right-hand sides."""

    highs: highspy.Highs
    bounds: BoundRows
    lower: np.ndarray  # column bounds that are not rows of A (mixed-integer problems)
    upper: np.ndarray
    c: np.ndarray | None = None  # the costs and right-hand side it holds
    b: np.ndarray | None = None
    columns: ColumnBounds | None = None  # what b makes of the bound rows

    def set_rhs(self, b: np.ndarray) -> None:
        """Remember ``b`` and the column bounds it gives (HiGHS is told by the caller)."""
        self.b = b.copy()
        self.columns = self.bounds.column_bounds(b, self.lower, self.upper)

    def row_bounds(self, program: ConeProgram) -> tuple[np.ndarray, np.ndarray]:
        """Zero-cone rows are equalities ``A_i x = b_i``, nonnegative-cone rows ``A_i x <= b_i``."""
        kept = self.bounds.kept
        upper = program.b[kept]
        lower = np.where(kept < program.dims.zero, upper, -np.inf)
        return lower, upper

    def update(self, program: ConeProgram) -> None:
        """Change what differs from the program HiGHS holds (an LPGD re-solve of a cost
        parameter keeps ``b``: HiGHS then keeps its bounds and their factorization)."""
        n, rows = program.c.size, self.bounds.kept.size
        if not np.array_equal(program.c, self.c):
            self.highs.changeColsCost(n, _indices(n), program.c)
            self.c = program.c.copy()
        if not np.array_equal(program.b, self.b):
            self.set_rhs(program.b)
            self.highs.changeRowsBounds(rows, _indices(rows), *self.row_bounds(program))
            self.highs.changeColsBounds(n, _indices(n), self.columns.lower, self.columns.upper)

    def solution(self, program: ConeProgram, tolerance: float, earlier_iterations: int = 0) -> Solution:
        """The solution HiGHS holds for ``program``, the one it was just given: read once, as
        float arrays (a typed conversion of HiGHS's lists costs half an untyped one). An LP
        iterate at a limit is judged by its residuals against ``tolerance``.
        ``earlier_iterations``: those of a run that was discarded, counted in."""
        highs, bounds, b = self.highs, self.bounds, program.b
        raw = highs.getModelStatus()
        mixed_integer = program.integrality is not None
        if raw in _LIMITS:
            has_point = highs.getInfoValue("primal_solution_status")[1] == highspy.kSolutionStatusFeasible
            status = OPTIMAL_INACCURATE if mixed_integer and has_point else ITERATION_LIMIT
        else:
            status = _STATUS.get(raw, SOLVER_ERROR)
        m, basis = b.size, None
        cut_off = status == ITERATION_LIMIT and not mixed_integer  # an LP iterate, judged below
        if status in (OPTIMAL, OPTIMAL_INACCURATE) or cut_off:
            result = highs.getSolution()
            x = _floats(result.col_value)
            s = np.empty(m)
            s[bounds.kept] = b[bounds.kept] - _floats(result.row_value)
            s[bounds.rows] = bounds.slack(b, x)
            if mixed_integer:  # constraint duals are not defined: zeros (no gradient uses them)
                y = np.zeros(m)
            else:
                # HiGHS: c + Px - A'r - d = 0;  cvxlpgd: c + Px + A'y = 0 with y >= 0 on A_i x <= b_i.
                y = np.empty(m)
                y[bounds.kept] = -_floats(result.row_dual)
                y[bounds.rows] = bounds.duals(self.columns, _floats(result.col_dual))
            status = judged(program, status, x, y, s, tolerance)
            if status == OPTIMAL and not mixed_integer:
                basis = _Start(Basis(highs.getBasis()), self.b, self.c)
        if status not in (OPTIMAL, OPTIMAL_INACCURATE):
            x, y, s = np.full(program.c.size, np.nan), np.full(m, np.nan), np.full(m, np.nan)
        iterations = earlier_iterations + _iteration_count(highs)
        return Solution(
            x=x,
            y=y,
            s=s,
            status=status,
            solver_status=highs.modelStatusToString(raw),
            iterations=iterations,
            basis=basis,
        )


_ITERATION_COUNTS = ("simplex_iteration_count", "qp_iteration_count", "ipm_iteration_count")


def _iteration_count(highs: highspy.Highs) -> int:
    """The iterations of HiGHS's last run (its counters read -1 when a method did not run)."""
    return int(max(sum(highs.getInfoValue(key)[1] for key in _ITERATION_COUNTS), 0))


def _floats(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)
