"""HiGHS backend: dual simplex for LPs (interior point with crossover for LPs with many dense rows:
``many_dense_rows``), branch and bound for mixed-integer LPs.

A simplex solver ends on a vertex with a basis, and a re-solve after a change of costs or
right-hand sides can start from a basis: the LPGD re-solves (and ``warm_start=True`` calls) start
from the item's own earlier basis (kept in ``Solution.basis``; 2.5x fewer pivots than cold on the
12 x 12 grid path, tests/test_highs.py). The forward solves of a chunk start cold, without
presolve, so that an item's result depends on that item alone; a start from the previous item's
basis did not pay. Per item at batch 128, forward + default backward, against that start with
presolve: 12 x 12 grid path 3.5 vs 4.3 ms, 5 x 5 path 0.92 vs 1.13 ms, dense LP 50 x 20 1.6 vs
2.1 ms. One HiGHS model per chunk is kept, and only changed costs and bounds are passed in.

Small LPs are solved many at a time (``solve_many``: a chunk's forward solves, and the first
LPGD re-solves of all its items): up to ``STACK_MAX_ITEMS`` items of at most ``STACK_NNZ_LIMIT``
nonzeros as one block-diagonal HiGHS model, since HiGHS's fixed cost per run is most of such a
solve (forward + default backward per item at batch 128: 0.62-0.65x on the 5 x 5 grid path,
0.45-0.47x on the knapsack LP; benchmarks/stacked.py). A run that does not end optimal (a block infeasible,
unbounded, or at a limit) is not split: each of its items is solved alone. Each item's ``x``,
``y``, ``s`` are recomputed from its own block of the final basis (highs_vertex.py), and that
block is its ``Solution.basis``, so re-solves start from it as from a single solve's basis.
What this guarantees: every item gets an optimal solution of its own program, with its own
status. Where its optimal basis is unique, HiGHS ends on that basis whatever the neighbours, so
its results are bitwise those of the item alone, in any group, chunking or order. A block whose
optimal vertex may not be unique (``highs_vertex.tied``: a movable nonbasic variable at zero
reduced cost) is solved again alone, so it gets the vertex of its solve in a batch of one
(integer costs on the 5 x 5 path: without this, 31 of 64 items got another shortest path in the
batch than alone). Several optimal bases of one vertex (primal degeneracy) remain: ``x`` is the
same point (to rounding, when two bases give it), but ``y``, where the duals are not unique, can
depend on the neighbours. ``Solution.iterations`` of a stacked item is the whole run's count. Mixed-integer
programs (a stacked branch and bound would couple the searches) and QPs are solved per item.
"""

from __future__ import annotations

import functools
import operator
import os
import sys
from collections.abc import Mapping, Sequence
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
    kept_model,
    split_common,
    types_of,
)
from cvxlpgd.solvers.highs_bounds import BoundRows, ColumnBounds
from cvxlpgd.solvers.highs_vertex import BasisSystem, LpValues, tied, vertices


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
    solves_many = True

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
        key = "dual_feasibility_tolerance"
        self._dual_tolerance = self.settings.get(key, DEFAULTS[key])
        rejected = _rejected_option(self._options)
        if rejected is not None:
            raise ValueError(f"HIGHS rejected the setting {rejected} (out of range or not an allowed value).")

    def _new_highs(self, lp: bool) -> highspy.Highs:
        highs = highspy.Highs()
        for key, value in self._options:
            highs.setOptionValue(key, value)
        if lp and "presolve" not in self.settings:
            # Every LP solve starts cold or from a basis, where presolve cost more than it saved:
            # 2.0x on the 5 x 5 and 12 x 12 grid paths, 2.2x on the dense LP, 1.3x on sparse LPs
            # of 2,000 and 20,000 variables. A branch and bound keeps it.
            highs.setOptionValue("presolve", "off")
        return highs

    def _build(self, program: ConeProgram) -> _Model:
        check_cones(self.name, self.cones, program.dims)
        n = program.c.size
        integrality = program.integrality
        highs = self._new_highs(lp=integrality is None)
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
        model: _Model = kept_model(workspace, "highs", program, self._build)
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
        self._set_strategy(highs, start is not None, start is not None and np.array_equal(start.b, program.b))
        if "solver" not in self.settings:
            highs.setOptionValue("solver", "ipm" if interior else DEFAULTS["solver"])
        self._run(highs)
        if start is not None and highs.getModelStatus() != _Status.kOptimal:
            # A warm start must not turn a solvable item into a failure: HiGHS can stop with
            # "Unknown" from a basis (2 of 18,000 neighbour starts on random LPs); run it cold.
            iterations = _iteration_count(highs)
            highs.clearSolver()
            self._set_strategy(highs, warm=False, same_b=False)
            self._run(highs)
            return model.solution(program, self._tolerance, earlier_iterations=iterations)
        return model.solution(program, self._tolerance)

    def solve_many(
        self,
        programs: Sequence[ConeProgram],
        warm_starts: Sequence[Solution | None],
        workspace: Workspace | None = None,
        eps: Sequence[float | None] | None = None,
    ) -> list[Solution]:
        """Programs of one structure: small LPs in groups of up to ``stack_size`` items, each
        group as one block-diagonal HiGHS model (HiGHS's fixed cost per run is most of a small
        LP's solve), every item's values recomputed from its own block of the final basis (see
        the module docstring for what that guarantees); other programs one by one."""
        del eps  # a vertex is exact: see SimplexBackend
        size = stack_size(programs[0]) if programs else 0
        if size == 0:
            return [
                self.solve(p, warm_start=w, workspace=workspace)
                for p, w in zip(programs, warm_starts, strict=True)
            ]
        workspace = {} if workspace is None else workspace
        if "highs_block" not in workspace:
            check_cones(self.name, self.cones, programs[0].dims)
            workspace["highs_block"] = _Block.of(programs[0])
        block: _Block = workspace["highs_block"]
        solutions: list[Solution] = []
        for first in range(0, len(programs), size):
            group, starts = programs[first : first + size], warm_starts[first : first + size]
            stacked = self._solve_stacked(block, group, starts, workspace) if len(group) > 1 else None
            if stacked is None:  # a group of one, or a failed run: each item alone
                stacked = [None] * len(group)
            for program, start, solved in zip(group, starts, stacked, strict=True):
                if solved is None:
                    alone = self.solve(program, start, workspace)
                    solved = self._own_vertex(block, program, alone, workspace)
                solutions.append(solved)
        return solutions

    def _solve_stacked(
        self,
        block: _Block,
        programs: Sequence[ConeProgram],
        warm_starts: Sequence[Solution | None],
        workspace: Workspace,
    ) -> list[Solution | None] | None:
        """One HiGHS run for ``programs`` stacked, from the items' own bases when every item
        has one (else cold: some blocks' bases are no basis of the model); None unless every
        block ends optimal (the run's status is the whole model's, so a failed block is found
        by solving each alone), and None for an item whose optimum may be tied (see
        ``_Stack.solutions``), which is solved alone too."""
        stacks = workspace.setdefault("highs_stacks", {})
        if len(programs) not in stacks:
            stacks[len(programs)] = _Stack.of(self._new_highs(lp=True), block, len(programs))
        stack: _Stack = stacks[len(programs)]
        stack.update(programs)
        starts = [w.basis if w is not None and isinstance(w.basis, _Start) else None for w in warm_starts]
        warm = all(start is not None for start in starts)
        if warm:
            stack.highs.setBasis(_joined([start.basis for start in starts]))
        else:
            stack.highs.clearSolver()
        same_b = warm and all(np.array_equal(st.b, p.b) for st, p in zip(starts, programs, strict=True))
        self._set_strategy(stack.highs, warm, same_b)
        self._run(stack.highs)
        if stack.highs.getModelStatus() != _Status.kOptimal:
            return None
        return stack.solutions(programs, self._dual_tolerance)

    def _interior_point(self, program: ConeProgram, start: _Start | None) -> bool:
        """An LP with ``DENSE_ROWS`` dense rows, cold or from a basis ``FAR_COSTS`` away from its
        costs, where the interior point method beats both simplex variants; not where the user
        chose a solver."""
        if "solver" in self.settings or program.integrality is not None or program.P is not None:
            return False
        if not many_dense_rows(program.A):
            return False
        return start is None or np.linalg.norm(program.c - start.c) > FAR_COSTS * np.linalg.norm(start.c)

    def _own_vertex(
        self, block: _Block, program: ConeProgram, solution: Solution, workspace: Workspace
    ) -> Solution:
        """An item solved alone, its values recomputed from its basis as a stacked block's are,
        so that it is the same whether its group failed or not, and whatever the group size."""
        if not isinstance(solution.basis, _Start):
            return solution
        model: _Model = workspace["highs"]
        values = block.vertex(program, model.columns, solution.basis.basis)
        if values is None:
            return solution
        outcome = _Outcome(solution.status, solution.solver_status, solution.iterations)
        return _conic_solution(
            program, block.bounds, model.columns, outcome, values, solution.basis, self._tolerance
        )

    def _set_strategy(self, highs: highspy.Highs, warm: bool, same_b: bool) -> None:
        """From a basis, the simplex that keeps it feasible (primal when it was optimal for the
        same ``b``); cold, HiGHS's default (or the user's)."""
        if "simplex_strategy" in self.settings:
            return
        if not warm:
            highs.setOptionValue("simplex_strategy", DEFAULTS["simplex_strategy"])
        else:
            highs.setOptionValue("simplex_strategy", _PRIMAL if same_b else _DUAL)

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


# Basis status codes and back: a status's ``value`` is read 5x faster than it hashes (pybind11
# makes a new object for each status of a list), and a table turns codes back into statuses.
_STATUSES = tuple(sorted(highspy.HighsBasisStatus.__members__.values(), key=lambda status: status.value))
_VALUE = operator.attrgetter("value")


def _codes(statuses: list[highspy.HighsBasisStatus]) -> np.ndarray:
    return np.fromiter(map(_VALUE, statuses), dtype=np.uint8, count=len(statuses))


def _statuses(codes: np.ndarray) -> list[highspy.HighsBasisStatus]:
    return [_STATUSES[code] for code in codes.tolist()]


class Basis:
    """A HiGHS basis, held as highspy's ``HighsBasis`` or as status codes (columns, rows), each
    made from the other on first need (about 0.2 us per status either way): a single solve's
    basis comes as the first, a stacked solve's blocks as the second. It pickles as its codes,
    so that a forward solve's basis can travel to the worker that runs the item's re-solves."""

    __slots__ = ("_highs", "_codes")

    def __init__(
        self, highs: highspy.HighsBasis | None = None, codes: tuple[np.ndarray, np.ndarray] | None = None
    ):
        self._highs, self._codes = highs, codes

    @property
    def highs(self) -> highspy.HighsBasis:
        if self._highs is None:
            columns, rows = self._codes
            basis = highspy.HighsBasis()
            basis.col_status, basis.row_status = _statuses(columns), _statuses(rows)
            basis.valid, basis.alien, basis.was_alien = True, False, False
            self._highs = basis
        return self._highs

    @property
    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        if self._codes is None:
            self._codes = _codes(self._highs.col_status), _codes(self._highs.row_status)
        return self._codes

    def __reduce__(self) -> tuple:
        return Basis, (None, self.codes)


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
        return _row_bounds(self.bounds, program)

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
        """The solution HiGHS holds for ``program``, the one it was just given.
        ``earlier_iterations``: those of a run that was discarded, counted in."""
        highs = self.highs
        raw = highs.getModelStatus()
        mixed_integer = program.integrality is not None
        if raw in _LIMITS:
            has_point = highs.getInfoValue("primal_solution_status")[1] == highspy.kSolutionStatusFeasible
            status = OPTIMAL_INACCURATE if mixed_integer and has_point else ITERATION_LIMIT
        else:
            status = _STATUS.get(raw, SOLVER_ERROR)
        values = basis = None
        if status in (OPTIMAL, OPTIMAL_INACCURATE, ITERATION_LIMIT):
            values = _read_values(highs)
            if not mixed_integer:
                basis = _Start(Basis(highs.getBasis()), self.b, self.c)
        return _conic_solution(
            program,
            self.bounds,
            self.columns,
            _Outcome(status, highs.modelStatusToString(raw), earlier_iterations + _iteration_count(highs)),
            values,
            basis,
            tolerance,
        )


def _row_bounds(bounds: BoundRows, program: ConeProgram) -> tuple[np.ndarray, np.ndarray]:
    """Zero-cone rows are equalities ``A_i x = b_i``, nonnegative-cone rows ``A_i x <= b_i``."""
    kept = bounds.kept
    upper = program.b[kept]
    lower = np.where(kept < program.dims.zero, upper, -np.inf)
    return lower, upper


def _read_values(highs: highspy.Highs) -> LpValues:
    """HiGHS's solution, read once, as float arrays (a typed conversion of HiGHS's lists costs
    half an untyped one)."""
    result = highs.getSolution()
    columns, rows = (_floats(result.col_value), _floats(result.col_dual)), (_floats(result.row_value),)
    return LpValues(columns[0], rows[0], columns[1], _floats(result.row_dual))


@dataclass(frozen=True)
class _Outcome:
    """How a run ended for one program: its status, HiGHS's words for it, its iterations."""

    status: str
    solver_status: str
    iterations: int


def _conic_solution(
    program: ConeProgram,
    bounds: BoundRows,
    columns: ColumnBounds,
    outcome: _Outcome,
    values: LpValues | None,
    basis: _Start | None,
    tolerance: float,
) -> Solution:
    """``program``'s solution from HiGHS-form values: an LP iterate at a limit is judged by its
    residuals against ``tolerance``; the basis is kept for an LP's optimal vertex only."""
    status, m = outcome.status, program.b.size
    mixed_integer = program.integrality is not None
    cut_off = status == ITERATION_LIMIT and not mixed_integer  # an LP iterate, judged below
    if values is not None and (status in (OPTIMAL, OPTIMAL_INACCURATE) or cut_off):
        x, y, s = _conic_point(bounds, program.b, columns, values, mixed_integer)
        status = judged(program, status, x, y, s, tolerance)
    if status not in (OPTIMAL, OPTIMAL_INACCURATE):
        x, y, s = np.full(program.c.size, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    return Solution(
        x=x,
        y=y,
        s=s,
        status=status,
        solver_status=outcome.solver_status,
        iterations=outcome.iterations,
        basis=basis if status == OPTIMAL and not mixed_integer else None,
    )


def _conic_point(
    bounds: BoundRows, b: np.ndarray, columns: ColumnBounds, values: LpValues, mixed_integer: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x, y, s`` of the conic program from HiGHS-form values; every array may carry a leading
    batch axis (the items of a stacked solve, at once)."""
    x = values.col_value
    s = np.empty(b.shape)
    s[..., bounds.kept] = b[..., bounds.kept] - values.row_value
    s[..., bounds.rows] = bounds.slack(b, x)
    if mixed_integer:  # constraint duals are not defined: zeros (no gradient uses them)
        return x, np.zeros(b.shape), s
    # HiGHS: c + Px - A'r - d = 0;  cvxlpgd: c + Px + A'y = 0 with y >= 0 on A_i x <= b_i.
    y = np.empty(b.shape)
    y[..., bounds.kept] = -values.row_dual
    y[..., bounds.rows] = bounds.duals(columns, values.col_dual)
    return x, y, s


# Stacked solves (HighsSolver.solve_many), measured in benchmarks/stacked.py: forward + default
# backward per item, stacked / per item, batch 32 and 128: 5 x 5 grid path (A: 160 nonzeros)
# 0.73-0.82 and 0.62-0.65, knapsack LP 2 x 32 (128) 0.58-0.59 and 0.45-0.47; stacking forced on
# the dense LP 50 x 20 (1,100) 1.37 and 1.14, on the 12 x 12 grid path (1,056) 20 and 19.
STACK_NNZ_LIMIT = 500  # an LP whose A has more nonzeros (bound rows included) is solved alone
STACK_MAX_ITEMS = 32  # items per stacked run (64 measured no better)


def stack_size(program: ConeProgram) -> int:
    """How many items of ``program``'s structure one stacked HiGHS run takes (0: solve each
    alone): LPs of at most ``STACK_NNZ_LIMIT`` nonzeros, ``STACK_MAX_ITEMS`` at a time."""
    if program.P is not None or program.integrality is not None:
        return 0  # a branch and bound of stacked MILPs couples the searches; QPs are not measured
    return STACK_MAX_ITEMS if program.A.nnz <= STACK_NNZ_LIMIT else 0


def _joined(bases: Sequence[Basis]) -> highspy.HighsBasis:
    """The bases of the blocks as one basis of the stacked model."""
    columns = np.concatenate([basis.codes[0] for basis in bases])
    rows = np.concatenate([basis.codes[1] for basis in bases])
    return Basis(codes=(columns, rows)).highs


@dataclass(frozen=True)
class _Block:
    """What every item of a stacked solve shares: its bound rows and its other rows (as HiGHS
    gets them, and dense for recomputing a vertex from its basis)."""

    bounds: BoundRows
    A: sp.csc_array  # the rows of A that stay rows (bounds.kept)
    system: BasisSystem

    @classmethod
    def of(cls, program: ConeProgram) -> _Block:
        bounds = BoundRows.of(program)
        A = sp.csc_array(sp.csr_array(program.A)[bounds.kept])
        return cls(bounds, A, BasisSystem.of(A.toarray()))

    def column_bounds(self, program: ConeProgram) -> ColumnBounds:
        n = program.c.size
        return self.bounds.column_bounds(program.b, np.full(n, -np.inf), np.full(n, np.inf))

    def stacked_A(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSC arrays (start, index, value) of ``k`` copies of ``A`` on the diagonal."""
        r, A = self.A.shape[0], self.A
        shifts = np.arange(k)
        start = (A.indptr[:-1][None, :] + A.nnz * shifts[:, None]).ravel()
        index = (A.indices[None, :] + r * shifts[:, None]).ravel()
        return np.append(start, k * A.nnz).astype(np.int32), index.astype(np.int32), np.tile(A.data, k)

    def vertex(self, program: ConeProgram, columns: ColumnBounds, basis: Basis) -> LpValues | None:
        """One item's vertex from its basis, computed as a stacked item's (None: unread)."""
        lower, upper = _row_bounds(self.bounds, program)
        codes = np.concatenate(basis.codes)[None]
        values, read = vertices(
            self.system,
            program.c[None],
            np.concatenate([columns.lower, lower])[None],
            np.concatenate([columns.upper, upper])[None],
            codes,
        )
        if not read[0]:
            return None
        return LpValues(values.col_value[0], values.row_value[0], values.col_dual[0], values.row_dual[0])


@dataclass
class _Stack:
    """A HiGHS model of ``k`` copies of one block, block-diagonal, block ``i`` in columns
    ``i n .. (i+1) n`` and rows ``i r .. (i+1) r``; ``update`` swaps in other programs' costs
    and right-hand sides, as ``_Model`` does for one, and keeps what they give per item as
    (k, .) arrays."""

    highs: highspy.Highs
    block: _Block
    k: int
    c: np.ndarray | None = None  # (k, n)
    b: np.ndarray | None = None  # (k, m)
    columns: ColumnBounds | None = None  # each item's column bounds, (k, .) arrays
    lower: np.ndarray | None = None  # (k, n + r): the bounds of each item's columns, then rows
    upper: np.ndarray | None = None

    @classmethod
    def of(cls, highs: highspy.Highs, block: _Block, k: int) -> _Stack:
        (r, n) = block.A.shape
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = k * n, k * r
        lp.col_cost_ = np.zeros(k * n)
        lp.col_lower_, lp.col_upper_ = np.zeros(k * n), np.zeros(k * n)
        lp.row_lower_, lp.row_upper_ = np.zeros(k * r), np.zeros(k * r)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = block.stacked_A(k)
        highs.passModel(lp)
        return cls(highs, block, k)

    def update(self, programs: Sequence[ConeProgram]) -> None:
        c = np.stack([p.c for p in programs])
        if not np.array_equal(c, self.c):
            self.highs.changeColsCost(c.size, _indices(c.size), c.ravel())
            self.c = c
        b = np.stack([p.b for p in programs])
        if np.array_equal(b, self.b):
            return
        self.b = b
        columns, rows = [], []
        for i, p in enumerate(programs):  # items often share b (a cost parameter): reuse its bounds
            same = i > 0 and np.array_equal(p.b, programs[i - 1].b)
            columns.append(columns[-1] if same else self.block.column_bounds(p))
            rows.append(rows[-1] if same else _row_bounds(self.block.bounds, p))
        self.columns = ColumnBounds(
            *(np.stack([getattr(cb, f) for cb in columns]) for f in ("lower", "upper", "share"))
        )
        row_lower, row_upper = np.stack([lo for lo, _ in rows]), np.stack([up for _, up in rows])
        self.lower = np.hstack([self.columns.lower, row_lower])
        self.upper = np.hstack([self.columns.upper, row_upper])
        self.highs.changeRowsBounds(
            row_lower.size, _indices(row_lower.size), row_lower.ravel(), row_upper.ravel()
        )
        size = self.columns.lower.size
        self.highs.changeColsBounds(
            size, _indices(size), self.columns.lower.ravel(), self.columns.upper.ravel()
        )

    def solutions(
        self, programs: Sequence[ConeProgram], dual_tolerance: float
    ) -> list[Solution | None] | None:
        """Each block's solution after an optimal run, from its own block of the basis (None
        when a block's basis cannot be read: the items are then solved alone). A block whose
        optimum may be tied (``tied``) gets None: which of its optimal vertices the run ends on
        can depend on the neighbours, so it is solved alone, as it would be in a batch of one."""
        joined = self.highs.getBasis()
        k, (r, n) = self.k, self.block.A.shape
        codes = np.hstack([_codes(joined.col_status).reshape(k, n), _codes(joined.row_status).reshape(k, r)])
        values, read = vertices(self.block.system, self.c, self.lower, self.upper, codes)
        if not read.all():
            return None
        ties = tied(values, codes, self.lower, self.upper, self.c, dual_tolerance)
        # Every block ended optimal: no status to judge (``judged`` only reads iterates at a limit).
        x, y, s = _conic_point(self.block.bounds, self.b, self.columns, values, mixed_integer=False)
        words, iterations = self.highs.modelStatusToString(_Status.kOptimal), _iteration_count(self.highs)
        return [
            Solution(
                x=x[i],
                y=y[i],
                s=s[i],
                status=OPTIMAL,
                solver_status=words,
                iterations=iterations,
                basis=_Start(Basis(codes=(codes[i, :n], codes[i, n:])), program.b.copy(), program.c.copy()),
            )
            if not ties[i]
            else None
            for i, program in enumerate(programs)
        ]


_ITERATION_COUNTS = ("simplex_iteration_count", "qp_iteration_count", "ipm_iteration_count")


def _iteration_count(highs: highspy.Highs) -> int:
    """The iterations of HiGHS's last run (its counters read -1 when a method did not run)."""
    return int(max(sum(highs.getInfoValue(key)[1] for key in _ITERATION_COUNTS), 0))


def _floats(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)
