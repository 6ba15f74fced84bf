"""The default gradient: scale-free LPGD, exact where a derivative exists, a finite step where
the solution map is locally constant (docs/design.md, "The default gradient").

Per item, the perturbation is relative to the size of the item's data, so the gradient is
homogeneous of degree 1 in the incoming gradient (a loss scaled by k gives a gradient scaled by
k: batch mean or sum, and the DDP world size, do not change the estimator). A small relative
step gives the near-exact derivative; the data blocks it leaves degenerate (an LP's costs, whose
solution does not move under a small cost change) take LPGD's finite step instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import ConeProgram, Solution
from cvxlpgd.errors import warn_user
from cvxlpgd.gradients.base import ChunkGradient, SolvedChunk
from cvxlpgd.gradients.lpgd import (
    LPGD,
    Resolving,
    Side,
    _real,
    lpgd_item_gradient,
    note_dependent_equalities,
    resolve_eps,
    resolve_workspace,
    split_hints,
)
from cvxlpgd.program import ConeStructure, DataGradient, ProgramBatch
from cvxlpgd.solvers.base import ConeSolver

# c_shift, b_shift -> the solution of the program with c + c_shift and b + b_shift
Shift = Callable[[np.ndarray, np.ndarray | None], Solution]


@dataclass(frozen=True)
class AdaptiveLPGD(Resolving):
    """Scale-free LPGD, the default of ``gradient="lpgd"``.

    For item i with forward solution z* and incoming gradients (dx, dy), the step is
    ``tau_i = rel / r_i`` with ``r_i = max(|dx| / s_c, |dy| / s_b)``, ``s_c = |c| + |P x*|`` and
    ``s_b = |b|`` (2-norms, 1 where zero; dy only when duals are outputs): the perturbed costs
    differ from the true ones by ``rel`` times their size, whatever the scale of the loss.

    small:   the relative step of the near-exact derivative (central LPGD, rho = 0).
    large:   the relative step for the blocks the small step leaves degenerate (None: never;
             1.5 from benchmarks/DEFAULT_GRADIENT.md, a compromise between small data, which
             favours larger steps, and large data, which favours smaller ones):
             the costs ``c``, ``P`` (degenerate when ``x`` does not move, or the program is an
             LP), the right-hand side ``b`` (when ``y`` does not move, or an LP with dual
             outputs) and ``A`` (when neither moves); only blocks that parameters enter count.
    noise:   movement up to ``noise * (1 + |z*|_inf)`` is solver noise, not movement.
    retries: a step whose two re-solves both fail (infeasible or unbounded) is retried at a
             tenth, this many times; one failed side gives a one-sided difference instead.
    """

    small: float = 1e-3
    large: float | None = 1.5
    noise: float = 1e-6
    retries: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "small", _real("small", self.small, "> 0", lambda t: t > 0))
        if self.large is not None:
            object.__setattr__(self, "large", _real("large", self.large, "> 0", lambda t: t > 0))
        object.__setattr__(self, "noise", _real("noise", self.noise, ">= 0", lambda t: t >= 0))
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"AdaptiveLPGD retries must be an integer >= 0, got {self.retries!r}.")

    def differentiate(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        solved: SolvedChunk,
        dx: np.ndarray,
        dy: np.ndarray | None,
        start: int,
    ) -> ChunkGradient:
        workspace = resolve_workspace(solver, program, solved, same_matrices=True)
        grads: list[DataGradient | None] = []
        reports: dict[int, StepReport] = {}
        for i, star in enumerate(solved.solutions):
            if not star.usable:
                grads.append(None)
                continue
            base = program.item(i)

            def shifted(c_shift: np.ndarray, b_shift: np.ndarray | None, base=base, star=star) -> Solution:
                b = base.b if b_shift is None else base.b + b_shift
                shifted_program = replace(base, c=base.c + c_shift, b=b)
                eps = resolve_eps(c_shift, b_shift)  # the small step is near the solver's accuracy
                return solver.solve(shifted_program, warm_start=star, workspace=workspace, eps=eps)

            item_dy = None if dy is None else dy[i]
            grad, report = self.item_gradient(program, base, star, dx[i], item_dy, shifted)
            grads.append(grad)
            if report.failed_solves:
                reports[start + i] = report
            if report.lost and item_dy is not None:
                note_dependent_equalities(reports, base)
        return ChunkGradient(grads, reports)

    def item_gradient(
        self,
        program: ProgramBatch,
        base: ConeProgram,
        star: Solution,
        dx: np.ndarray,
        dy: np.ndarray | None,
        solve: Shift,
    ) -> tuple[DataGradient | None, StepReport]:
        """One item: the small step, then the large step for the blocks it leaves degenerate."""
        structure, report = program.structure, StepReport()
        s_c, s_b = relative_scales(base, star)
        r = float(np.linalg.norm(dx)) / s_c
        if dy is not None:
            r = max(r, float(np.linalg.norm(dy)) / s_b)
        if r == 0.0:
            return DataGradient.zeros(structure), report
        tenths = [10.0**-k for k in range(self.retries + 1)]

        def step(rels: list[float]) -> tuple[DataGradient | None, dict[int, Solution]]:
            return _first_working_step(structure, star, dx, dy, [rel / r for rel in rels], solve, report)

        def large_step() -> DataGradient | None:
            return step([self.large * t for t in tenths if self.large * t > self.small])[0]

        needed = _parametrized_blocks(program)
        lp = is_lp(structure)
        structural = {
            "c": lp and bool(np.any(dx)),
            "b": lp and dy is not None and bool(np.any(dy)),
            "A": False,
        }
        if self.large is not None and needed and all(structural[k] for k in needed):
            large = large_step()  # every block that matters is degenerate: skip the small step
            if large is not None:
                return large, report
            report.large_lost = True
        small, solutions = step([self.small * t for t in tenths])
        if small is None:
            report.lost = True
            return None, report
        if self.large is None or report.large_lost:
            return small, report
        x_static = not _moved(star.x, solutions, "x", self.noise)
        y_static = not _moved(star.y, solutions, "y", self.noise)
        movement = {"c": x_static, "b": y_static, "A": x_static and y_static}
        degenerate = {k: k in needed and (structural[k] or movement[k]) for k in ("c", "b", "A")}
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
            P=None if small.P is None else (large.P if degenerate["c"] else small.P),
        ), report

    def report(self, results: list[ChunkGradient], raise_errors: bool) -> None:
        """One warning per call with the counts; the failed re-solves were handled per item."""
        hints, by_item = split_hints(results)
        reports = list(by_item.values())
        if not reports:
            return
        counts = {
            "used a smaller step or one side": sum(r.weakened for r in reports),
            "kept the small step's gradient for a degenerate block": sum(r.large_lost for r in reports),
            "got zero gradient (no step solved)": sum(r.lost for r in reports),
        }
        detail = "; ".join(f"{n} item(s) {what}" for what, n in counts.items() if n)
        total = sum(len(r.grads) for r in results)
        failed = sum(r.failed_solves for r in reports)
        warn_user(
            f"{failed} perturbed re-solve(s) of the default LPGD gradient were infeasible or unbounded "
            f"in a batch of {total}; {detail}. {' '.join(sorted(hints))}".rstrip(),
            {i: f"{s.failed_solves} failed re-solve(s)" for i, s in by_item.items()},
        )


@dataclass
class StepReport:
    """What happened to one item's re-solves."""

    failed_solves: int = 0
    weakened: bool = False  # a smaller step or one side was used
    large_lost: bool = False  # a degenerate block kept the small step's gradient
    lost: bool = False  # no step worked: zero gradient


def is_lp(structure: ConeStructure) -> bool:
    """No quadratic term and only zero and nonnegative cones: x is piecewise constant in c."""
    dims = structure.dims
    return structure.P is None and dims.size == dims.zero + dims.nonneg


def relative_scales(program: ConeProgram, solution: Solution) -> tuple[float, float]:
    """(s_c, s_b): the size of the costs (with the quadratic's gradient P x*) and of b."""
    s_c = float(np.linalg.norm(program.c))
    if program.P is not None:
        upper, x = sp.triu(program.P), solution.x
        s_c += float(np.linalg.norm(upper @ x + upper.T @ x - upper.diagonal() * x))
    s_b = float(np.linalg.norm(program.b))
    return s_c or 1.0, s_b or 1.0


def _parametrized_blocks(program: ProgramBatch) -> list[str]:
    """The gradient blocks that matter: costs (c or P), right-hand side b, matrix A."""
    entered = program.parametrized
    return [k for k, names in (("c", {"c", "P"}), ("b", {"b"}), ("A", {"A"})) if entered & names]


def _first_working_step(
    structure: ConeStructure,
    star: Solution,
    dx: np.ndarray,
    dy: np.ndarray | None,
    taus: list[float],
    solve: Shift,
    report: StepReport,
) -> tuple[DataGradient | None, dict[int, Solution]]:
    """LPGD at the first step of ``taus`` whose re-solves work: central if both sides solve,
    one-sided if one does (a failed side or a smaller step counts as weakened)."""
    for k, tau in enumerate(taus):
        solutions = {}
        for sign in (1, -1):
            z = solve(sign * tau * dx, None if dy is None else -sign * tau * dy)
            if z.usable:
                solutions[sign] = z
        failures = 2 - len(solutions)
        report.failed_solves += failures
        if solutions:
            report.weakened |= failures > 0 or k > 0
            side: Side = "central" if failures == 0 else ("lower" if 1 in solutions else "upper")
            return lpgd_item_gradient(structure, star, solutions, LPGD(tau=tau, side=side)), solutions
    return None, {}


def _moved(before: np.ndarray, solutions: dict[int, Solution], attr: str, noise: float) -> bool:
    """Whether the perturbed solutions differ from each other (or from z*) beyond solver noise."""
    points = [getattr(z, attr) for z in solutions.values()]
    if len(points) == 1:
        points.append(before)
    spread = float(np.max(np.abs(points[0] - points[1]), initial=0.0))
    return spread > noise * (1.0 + float(np.max(np.abs(before), initial=0.0)))
