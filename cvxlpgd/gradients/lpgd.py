"""LPGD with a fixed step: gradients from re-solves of the conic program with costs perturbed by
the incoming gradient (Paulus, Martius & Musil, ICML 2024); the formulas are in docs/design.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cvxlpgd.cone import Solution
from cvxlpgd.errors import PerturbedSolveError, warn_user
from cvxlpgd.gradients.base import ChunkGradient, ItemRecord, SolvedChunk
from cvxlpgd.gradients.engine import ItemReSolver, differentiate_items, lpgd_gradient, warn_unresolvable
from cvxlpgd.gradients.lagrangian import SIDE_NAMES, SIGNS, Side, Step
from cvxlpgd.program import ConicForm, ProgramBatch
from cvxlpgd.solvers.base import ConeSolver, solves_many

_MAX_LISTED = 5
DEFAULT_TAU = 1.0


class ReSolvingMethod:
    """What every LPGD variant shares: it only re-solves, so it takes the solver's own conic
    conventions with a native ``P``, and its forward is a plain solve of each item."""

    def conic_form(self, solver: ConeSolver) -> ConicForm:
        return ConicForm(solver.canon_solver, quad_obj=True, cones=solver.cones, solver=solver.name)

    def solve(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        keep_state: bool,
        differentiable: bool,
        warm_starts: list[Solution],
    ) -> SolvedChunk:
        return solve_chunk(solver, program, keep_state, warm_starts)


@dataclass(frozen=True)
class LPGD(ReSolvingMethod):
    """LPGD backward pass with a fixed step: re-solves with the costs perturbed by ``tau``.

    Args:
        tau: size of the cost perturbation ``tau * dx`` (and ``tau * dy`` on ``b``). Small tau
            approaches the true derivative where one exists; on LPs a tau that moves the
            solution to a neighbouring vertex gives an informative gradient.
        rho: proximal weight; ``rho > 0`` adds ``rho/2 ||x - x*||^2`` to the perturbed problems,
            which makes them strongly convex (bounded, smoother gradients) at the price of bias.
        side: ``"lower"`` uses the ``+tau`` solve, ``"upper"`` the ``-tau`` one, ``"central"``
            both.
        fallback: when a perturbed problem is infeasible or unbounded on one side, use the
            one-sided estimate of the other side (solving it if the side was not in use) and
            warn, instead of failing the item. Off by default, so that a changed estimator is
            never silent.

    Raises:
        ValueError: ``tau`` is not a finite number > 0, ``rho`` not one >= 0, or ``side`` is
            not ``"lower"``, ``"upper"`` or ``"central"``.
        TypeError: ``fallback`` is not a bool.
    """

    tau: float = DEFAULT_TAU
    rho: float = 0.0
    side: Side = "central"
    fallback: bool = False

    def __post_init__(self) -> None:
        # Accept numpy and torch scalars; store plain floats.
        object.__setattr__(self, "tau", real_setting("LPGD", "tau", self.tau, "> 0", lambda t: t > 0))
        object.__setattr__(self, "rho", real_setting("LPGD", "rho", self.rho, ">= 0", lambda r: r >= 0))
        if self.side not in SIGNS:
            raise ValueError(f"LPGD side must be one of {sorted(SIGNS)}, got {self.side!r}.")
        if not isinstance(self.fallback, bool):
            raise TypeError(f"LPGD fallback must be True or False, got {self.fallback!r}.")

    @property
    def step(self) -> Step:
        return Step(self.tau, self.rho, self.side)

    def differentiate(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        solved: SolvedChunk,
        dx: np.ndarray,
        dy: np.ndarray | None,
        start: int,
    ) -> ChunkGradient:
        def item_gradient(resolver: ItemReSolver, dx_i, dy_i, record: ItemRecord):
            return lpgd_gradient(resolver, dx_i, dy_i, [self.step], self.fallback, record)

        def first_re_solves(resolver: ItemReSolver, dx_i, dy_i) -> list[tuple[int, Step]]:
            return [(sign, self.step) for sign in SIGNS[self.side]]

        return differentiate_items(solver, program, solved, dx, dy, start, item_gradient, first_re_solves)

    def report(self, results: list[ChunkGradient], raise_errors: bool) -> None:
        """Failed re-solves: raise (or warn) for items left without a gradient; warn once for
        items that fell back to one side, and for perturbations too small for the solver."""
        records = {i: r for result in results for i, r in result.records.items()}
        total = sum(len(result.grads) for result in results)
        warn_unresolvable(records, f"LPGD (tau={self.tau})", "Use a larger tau.")
        failures = {(i, sign): status for i, r in records.items() for sign, status in r.failed.items()}
        lost = {key: status for key, status in failures.items() if records[key[0]].lost}
        if lost:
            self._report_lost(lost, results, total, raise_errors)
        elif failures:
            fallen = len({i for i, _ in failures})
            warn_user(
                f"LPGD (tau={self.tau}) fell back to a one-sided estimate for {fallen} of {total} "
                "batch item(s) where a re-solve failed.",
                failures,
            )

    def _report_lost(
        self, lost: dict[tuple[int, int], str], results: list[ChunkGradient], total: int, raise_errors: bool
    ) -> None:
        hints = {r.dependent_equalities for r in results if r.dependent_equalities}
        cause = " ".join(sorted(hints)) or (
            "A perturbed cost can make the problem unbounded and a perturbed right-hand side "
            "infeasible. Remedies: a smaller tau, rho > 0 (keeps the perturbed problem bounded), "
            "the other side (side='lower' or 'upper'), or LPGD(fallback=True) to use the side "
            "that works."
        )
        if raise_errors:
            first_sign = next(iter(lost))[1]
            raise PerturbedSolveError(
                f"LPGD re-solve with tau={self.tau}, rho={self.rho} failed ({_failure_text(lost)}). {cause}",
                {i: s for (i, _), s in lost.items()},
                side="lower" if first_sign == 1 else "upper",
                tau=self.tau,
            )
        warn_user(
            f"LPGD re-solves with tau={self.tau}, rho={self.rho} failed for {len({i for i, _ in lost})} of "
            f"{total} batch item(s); those get zero gradient. {cause}",
            lost,
        )


def solve_chunk(
    solver: ConeSolver, program: ProgramBatch, keep_state: bool, warm_starts: list[Solution]
) -> SolvedChunk:
    """Solve a chunk's items, sharing one workspace where the backend reuses it, in one call
    where it solves many programs of one structure at once. The workspace is kept (when
    allowed) for the re-solves, which have the same matrices."""
    workspace = {} if solver.reuses_workspace and program.shared_matrices else None
    items = [program.item(i) for i in range(program.batch_size)]
    starts = [_usable(warm_starts, i) for i in range(program.batch_size)]
    if program.shared_matrices and solves_many(solver):
        solutions = solver.solve_many(items, starts, workspace)
    else:
        solutions = [
            solver.solve(p, warm_start=w, workspace=workspace) for p, w in zip(items, starts, strict=True)
        ]
    return SolvedChunk(solutions, workspace if keep_state else None)


def _usable(warm_starts: list[Solution], i: int) -> Solution | None:
    """Item ``i``'s warm start, if there is a usable one."""
    return warm_starts[i] if i < len(warm_starts) and warm_starts[i].usable else None


def _failure_text(failures: dict[tuple[int, int], str]) -> str:
    listed = list(failures.items())[:_MAX_LISTED]
    return "; ".join(f"item {i}, {SIDE_NAMES[sign]} side: {status}" for (i, sign), status in listed)


def real_setting(owner: str, name: str, value: object, bound: str, holds: Callable[[float], bool]) -> float:
    """A finite float satisfying ``holds`` from a Python, numpy or one-element torch number."""
    is_number = isinstance(value, numbers.Real) or (
        hasattr(value, "__float__") and getattr(value, "numel", lambda: 1)() == 1
    )
    number = float(value) if is_number and not isinstance(value, (bool, np.bool_)) else math.nan
    if not (math.isfinite(number) and holds(number)):
        raise ValueError(f"{owner} {name} must be a finite number {bound}, got {value!r}.")
    return number
