"""LPGD: gradients from re-solves of the conic program with costs perturbed by the incoming
gradient (Paulus, Martius & Musil, ICML 2024); the formulas are in docs/design.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import INFEASIBLE, ConeProgram, Solution
from cvxlpgd.errors import PerturbedSolveError, warn_user
from cvxlpgd.gradients.base import ChunkGradient, SolvedChunk
from cvxlpgd.program import ConeStructure, ConicForm, DataGradient, ProgramBatch
from cvxlpgd.solvers.base import ConeSolver, Workspace

Side = Literal["central", "lower", "upper"]
_SIGNS = {"lower": (1,), "upper": (-1,), "central": (1, -1)}
_SIDE_NAMES = {1: "lower (+tau)", -1: "upper (-tau)"}
_MAX_LISTED = 5
_WEAK = 0  # the "sign" under which differentiate reports a perturbation too small to resolve
# Re-solve accuracy as a fraction of the perturbation |tau (dx, dy)|_inf: a warm re-solve stops
# within its tolerance of the optimum, and at small tau the change LPGD measures is of that
# order (sparsemax n = 20, tau = 1e-4, SCS eps 1e-6: central LPGD 6.7e-3 off the exact Jacobian
# at the user's tolerance, 3e-7 at this one). The gradient should be accurate to about 1e-3.
EPS_FRACTION = 1e-4

DEFAULT_TAU = 1.0


class Resolving:
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
class LPGD(Resolving):
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

    def differentiate(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        solved: SolvedChunk,
        dx: np.ndarray,
        dy: np.ndarray | None,
        start: int,
    ) -> ChunkGradient:
        n, shared = program.structure.n, program.shared_matrices
        workspace = resolve_workspace(solver, program, solved, same_matrices=self.rho == 0)
        shared_P_rho = proximal_P(program.item(0).P, n, self.rho) if shared else None
        grads: list[DataGradient | None] = []
        problems: dict[tuple[int, int], str] = {}
        for i, star in enumerate(solved.solutions):
            if not star.usable:
                grads.append(None)
                continue
            base = program.item(i)
            P_rho = shared_P_rho if shared else proximal_P(base.P, n, self.rho)
            item_dy = None if dy is None else dy[i]
            eps = resolve_eps(self.tau * dx[i], None if item_dy is None else self.tau * item_dy)
            if 0 < eps < solver.tightest_eps:
                problems[(start + i, _WEAK)] = f"signal {eps / EPS_FRACTION:.1e}"
            grad, bad = self._item_gradient(
                solver, program.structure, base, P_rho, star, dx[i], item_dy, workspace, eps
            )
            if INFEASIBLE in bad.values() and dy is not None:
                note_dependent_equalities(problems, base)
            grads.append(grad)
            problems.update({(start + i, sign): status for sign, status in bad.items()})
        return ChunkGradient(grads, problems)

    def _item_gradient(
        self,
        solver: ConeSolver,
        structure: ConeStructure,
        base: ConeProgram,
        P_rho: sp.csc_array | None,
        star: Solution,
        dx: np.ndarray,
        dy: np.ndarray | None,
        workspace: Workspace | None,
        eps: float,
    ) -> tuple[DataGradient | None, dict[int, str]]:
        """One item's gradient (None if it cannot be had) and the re-solves that failed, by sign."""

        def resolve(sign: int) -> Solution:
            problem = perturbed_program(base, P_rho, star, dx, dy, sign, self)
            return solver.solve(problem, warm_start=star, workspace=workspace, eps=eps)

        def refined() -> Solution:
            """The forward point to the re-solves' accuracy, for a one-sided difference against it
            (sparsemax, tau = 1e-4, SCS eps 1e-6: gradient error 5.7e-3 without, 1.9e-4 with).
            The forward's workspace has the re-solves' P only when rho = 0."""
            if eps >= solver.eps:
                return star
            kept = workspace if self.rho == 0 else None
            z = solver.solve(base, warm_start=star, workspace=kept, eps=eps)
            return z if z.usable else star

        if self.side != "central":
            star = refined()
        perturbed = {sign: resolve(sign) for sign in _SIGNS[self.side]}
        bad = {sign: z.status for sign, z in perturbed.items() if not z.usable}
        if not bad:
            return lpgd_item_gradient(structure, star, perturbed, self), {}
        if not self.fallback:
            return None, bad
        if self.side == "central":
            star = refined()
        for sign in (1, -1):  # a one-sided config has not tried the other side yet
            if sign not in perturbed:
                perturbed[sign] = resolve(sign)
                if not perturbed[sign].usable:
                    bad[sign] = perturbed[sign].status
        usable = [sign for sign in (1, -1) if perturbed[sign].usable]
        if not usable:
            return None, bad
        one_sided = replace(self, side="lower" if usable[0] == 1 else "upper")
        return lpgd_item_gradient(structure, star, perturbed, one_sided), bad

    def report(self, results: list[ChunkGradient], raise_errors: bool) -> None:
        """Failed re-solves: raise (or warn) for items left without a gradient; warn once for
        items that fell back to one side."""
        grads = [g for r in results for g in r.grads]
        hints, problems = split_hints(results)
        weak = {key[0]: text for key, text in problems.items() if key[1] == _WEAK}
        if weak:
            listed = ", ".join(f"item {i}: {text}" for i, text in list(weak.items())[:_MAX_LISTED])
            warn_user(
                f"LPGD (tau={self.tau}): the perturbation tau * |(dx, dy)| is too small for the solver "
                f"to resolve ({listed}; re-solves stop at {EPS_FRACTION:g} x that signal, but at least "
                "at the solver's tightest tolerance), so those gradients are mostly solver noise. "
                "Use a larger tau.",
                weak,
            )
        failures = {key: status for key, status in problems.items() if key[1] != _WEAK}
        lost = {key: status for key, status in failures.items() if grads[key[0]] is None}
        lost_items = {i for i, _ in lost}
        if lost:
            cause = " ".join(sorted(hints)) or (
                "A perturbed cost can make the problem unbounded and a perturbed right-hand side "
                "infeasible. Remedies: a smaller tau, rho > 0 (keeps the perturbed problem bounded), "
                "the other side (side='lower' or 'upper'), or LPGD(fallback=True) to use the side "
                "that works."
            )
            if raise_errors:
                first_sign = next(iter(lost))[1]
                raise PerturbedSolveError(
                    f"LPGD re-solve with tau={self.tau}, rho={self.rho} failed "
                    f"({_failure_text(lost)}). {cause}",
                    {i: s for (i, _), s in lost.items()},
                    side="lower" if first_sign == 1 else "upper",
                    tau=self.tau,
                )
            warn_user(
                f"LPGD re-solves with tau={self.tau}, rho={self.rho} failed for {len(lost_items)} of "
                f"{len(grads)} batch item(s); those get zero gradient. {cause}",
                lost,
            )
        elif failures:
            fallen = len({i for i, _ in failures})
            warn_user(
                f"LPGD (tau={self.tau}) fell back to a one-sided estimate for {fallen} of {len(grads)} "
                "batch item(s) where a re-solve failed.",
                failures,
            )


_HINT = "dependent equalities"  # a chunk's problems note under this key why re-solves failed


def note_dependent_equalities(problems: dict, program: ConeProgram) -> None:
    """Once per chunk: note it when dependent equality rows explain infeasible re-solves."""
    if _HINT not in problems:
        hint = dependent_equalities(program)
        if hint:
            problems[_HINT] = hint


def split_hints(results: list[ChunkGradient]) -> tuple[set[str], dict]:
    """A call's notes on dependent equalities, and its per-item problems without them."""
    hints = {r.problems[_HINT] for r in results if _HINT in r.problems}
    problems = {key: value for r in results for key, value in r.problems.items() if key != _HINT}
    return hints, problems


def solve_chunk(
    solver: ConeSolver, program: ProgramBatch, keep_state: bool, warm_starts: list[Solution]
) -> SolvedChunk:
    """Solve a chunk's items in order, sharing one workspace where the backend reuses it. The
    workspace is kept (when allowed) for the re-solves, which have the same matrices."""
    workspace = {} if solver.reuses_workspace and program.shared_matrices else None
    solutions = [
        solver.solve(program.item(i), warm_start=_usable(warm_starts, i), workspace=workspace)
        for i in range(program.batch_size)
    ]
    return SolvedChunk(solutions, workspace if keep_state else None)


def _usable(warm_starts: list[Solution], i: int) -> Solution | None:
    """Item ``i``'s warm start, if there is a usable one."""
    return warm_starts[i] if i < len(warm_starts) and warm_starts[i].usable else None


def resolve_workspace(
    solver: ConeSolver, program: ProgramBatch, solved: SolvedChunk, same_matrices: bool
) -> Workspace | None:
    """The workspace a chunk's re-solves share: the forward's when they have its matrices and it
    was kept, else a fresh one (None where the backend does not reuse workspaces)."""
    if not (solver.reuses_workspace and program.shared_matrices):
        return None
    return solved.state if same_matrices and solved.state is not None else {}


def resolve_eps(c_shift: np.ndarray, b_shift: np.ndarray | None) -> float:
    """The accuracy a re-solve of costs moved by ``c_shift`` (and ``b`` by ``b_shift``) needs:
    ``EPS_FRACTION`` of the largest move."""
    size = _inf_norm(c_shift) if b_shift is None else max(_inf_norm(c_shift), _inf_norm(b_shift))
    return EPS_FRACTION * size


def _inf_norm(v: np.ndarray) -> float:
    return float(np.max(np.abs(v), initial=0.0))


def _failure_text(failures: dict[tuple[int, int], str]) -> str:
    listed = list(failures.items())[:_MAX_LISTED]
    return "; ".join(f"item {i}, {_SIDE_NAMES[sign]} side: {status}" for (i, sign), status in listed)


def dependent_equalities(program: ConeProgram) -> str | None:
    """Why perturbing ``b`` along ``dy`` can make every re-solve infeasible: linearly dependent
    equality rows (their duals are not unique, and ``b - tau dy`` leaves the range of A)."""
    rows = program.dims.zero
    if rows < 2 or rows * program.A.shape[1] > 4_000_000:  # too large to check densely
        return None
    rank = int(np.linalg.matrix_rank(program.A[:rows].toarray()))
    if rank == rows:
        return None
    return (
        f"The problem's {rows} equality rows are linearly dependent (rank {rank}): the duals of "
        "dependent equalities are not unique, and LPGD's perturbation of their right-hand side "
        "makes the re-solve infeasible. Drop the redundant equality row(s), or use "
        "gradient='implicit'."
    )


def _real(name: str, value: object, bound: str, holds: Callable[[float], bool]) -> float:
    """A finite float satisfying ``holds`` from a Python, numpy or one-element torch number."""
    is_number = isinstance(value, numbers.Real) or (
        hasattr(value, "__float__") and getattr(value, "numel", lambda: 1)() == 1
    )
    number = float(value) if is_number and not isinstance(value, (bool, np.bool_)) else math.nan
    if not (math.isfinite(number) and holds(number)):
        raise ValueError(f"LPGD {name} must be a finite number {bound}, got {value!r}.")
    return number


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
