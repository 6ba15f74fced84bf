"""The one LPGD engine: perturb, re-solve, refine, fall back, difference.

Every LPGD variant is this engine with a step policy: ``LPGD`` passes its fixed step, the default
``AdaptiveLPGD`` relative steps per item. As in jaxopt's ``implicit_diff``, the rule (the formulas
of ``lagrangian.py``) is pure and the inner solve is a parameter: ``ItemReSolver`` re-solves one
item's perturbed programs, warm-started from its forward solution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import INFEASIBLE, ConeProgram, Solution
from cvxlpgd.errors import warn_user
from cvxlpgd.gradients.base import ChunkGradient, ItemRecord, SolvedChunk
from cvxlpgd.gradients.lagrangian import SIGNS, Step, finite_difference, perturbed_program, proximal_P
from cvxlpgd.program import DataGradient, ProgramBatch
from cvxlpgd.solvers.base import ConeSolver, Workspace, solves_many

# Re-solve accuracy as a fraction of the perturbation |tau (dx, dy)|_inf: a warm re-solve stops
# within its tolerance of the optimum, and at small tau the change LPGD measures is of that order
# (benchmarks/re_solve_accuracy.py: sparsemax n = 20, SCS eps 1e-6, LPGD tau = 1e-4, central:
# gradient error 1.7e-2 with re-solves at the user's tolerance, 2.4e-7 at this fraction).
EPS_FRACTION = 1e-4
_MAX_LISTED = 5  # items a warning names


def re_solve_eps(step: Step, dx: np.ndarray, dy: np.ndarray | None) -> float:
    """The accuracy a re-solve needs: ``EPS_FRACTION`` of the smallest side's largest move
    ``tau |(dx, dy)|_inf``."""
    size = _inf_norm(dx) if dy is None else max(_inf_norm(dx), _inf_norm(dy))
    return EPS_FRACTION * min(step.tau, step.tau_of(-1)) * size


@dataclass
class ChunkReSolves:
    """What the re-solves of one chunk share: the backend and its workspaces. The forward's
    workspace serves re-solves with the forward's ``P`` (rho = 0); each ``rho > 0`` gets its own."""

    solver: ConeSolver
    program: ProgramBatch
    forward_workspace: Workspace | None
    proximal_workspaces: dict[float, Workspace] = field(default_factory=dict)
    shared_P_rho: dict[float, sp.csc_array | None] = field(default_factory=dict)

    @classmethod
    def of(cls, solver: ConeSolver, program: ProgramBatch, solved: SolvedChunk) -> ChunkReSolves:
        shares = solver.reuses_workspace and program.shared_matrices
        forward = (solved.state if solved.state is not None else {}) if shares else None
        return cls(solver, program, forward)

    def workspace(self, rho: float) -> Workspace | None:
        if self.forward_workspace is None or rho == 0:
            return self.forward_workspace
        return self.proximal_workspaces.setdefault(rho, {})

    def P_rho(self, base: ConeProgram, rho: float) -> sp.csc_array | None:
        """``P + rho I`` of an item's perturbed programs, built once for a chunk whose items
        share ``P``."""
        if not self.program.shared_matrices:
            return proximal_P(base.P, base.c.size, rho)
        if rho not in self.shared_P_rho:
            self.shared_P_rho[rho] = proximal_P(base.P, base.c.size, rho)
        return self.shared_P_rho[rho]

    def item(self, i: int, star: Solution) -> ItemReSolver:
        return ItemReSolver(self, self.program.item(i), star)

    def solve_ahead(self, items: Sequence[ItemInput], first_re_solves: FirstReSolves) -> None:
        """The re-solves each item's gradient starts with, for all items at once: one
        ``solve_many`` per workspace (proximal weight) and side, where the backend has it and
        the items share their matrices (a side's programs are as many as the forward's, so a
        backend's model of the forward's size serves them); each item's logic then finds its
        results waiting."""
        if not (solves_many(self.solver) and self.program.shared_matrices):
            return
        requests: dict[tuple[float, int], list[_ReSolve]] = {}
        for item in items:
            for sign, step in first_re_solves(item.resolver, item.dx, item.dy):
                program = item.resolver.program(sign, step, item.dx, item.dy)
                eps = re_solve_eps(step, item.dx, item.dy)
                requests.setdefault((step.rho, sign), []).append(
                    _ReSolve(item.resolver, sign, step, program, eps)
                )
        for (rho, _), group in requests.items():
            solutions = self.solver.solve_many(
                [r.program for r in group],
                [r.resolver.star for r in group],
                self.workspace(rho),
                [r.eps for r in group],
            )
            for request, solution in zip(group, solutions, strict=True):
                request.resolver.ahead[(request.sign, request.step)] = solution


@dataclass(frozen=True)
class ItemInput:
    """One item's re-solver and incoming gradients."""

    resolver: ItemReSolver
    dx: np.ndarray
    dy: np.ndarray | None


@dataclass(frozen=True)
class _ReSolve:
    """One perturbed program to solve ahead for an item."""

    resolver: ItemReSolver
    sign: int
    step: Step
    program: ConeProgram
    eps: float


@dataclass
class ItemReSolver:
    """The inner solve for one batch item: its perturbed programs, warm-started from ``star``."""

    chunk: ChunkReSolves
    base: ConeProgram
    star: Solution
    _P_rho: dict[float, sp.csc_array | None] = field(default_factory=dict)
    # (sign, step) -> the re-solve the chunk did for this item ahead (ChunkReSolves.solve_ahead)
    ahead: dict[tuple[int, Step], Solution] = field(default_factory=dict)

    def program(self, sign: int, step: Step, dx: np.ndarray, dy: np.ndarray | None) -> ConeProgram:
        if step.rho not in self._P_rho:
            self._P_rho[step.rho] = self.chunk.P_rho(self.base, step.rho)
        return perturbed_program(self.base, self._P_rho[step.rho], self.star, dx, dy, sign, step)

    def perturbed(self, sign: int, step: Step, dx: np.ndarray, dy: np.ndarray | None, eps: float) -> Solution:
        solved = self.ahead.pop((sign, step), None)
        if solved is not None:
            return solved
        program = self.program(sign, step, dx, dy)
        workspace = self.chunk.workspace(step.rho)
        return self.chunk.solver.solve(program, warm_start=self.star, workspace=workspace, eps=eps)

    def refined(self, eps: float) -> Solution:
        """The forward point to the re-solves' accuracy, for a one-sided difference against it
        (benchmarks/re_solve_accuracy.py, lower side: gradient error 6.9e-3 without, 3.8e-4 with)."""
        if eps >= self.chunk.solver.eps:
            return self.star
        workspace = self.chunk.workspace(0.0)
        z = self.chunk.solver.solve(self.base, warm_start=self.star, workspace=workspace, eps=eps)
        return z if z.usable else self.star


def lpgd_gradient(
    resolver: ItemReSolver,
    dx: np.ndarray,
    dy: np.ndarray | None,
    steps: Sequence[Step],
    fallback: bool,
    record: ItemRecord,
) -> DataGradient | None:
    """LPGD at the first of ``steps`` whose re-solves work (None if none does).

    A step works when its side's re-solves all solve; with ``fallback``, also when one side
    solves (the other side is tried if the step's side did not use it): its one-sided difference
    is taken. A one-sided difference is taken against the forward point refined to the
    re-solves' accuracy."""
    structure, tightest = resolver.chunk.program.structure, resolver.chunk.solver.tightest_eps
    for k, step in enumerate(steps):
        eps = re_solve_eps(step, dx, dy)
        if 0 < eps < tightest:
            record.unresolvable_signal = eps / EPS_FRACTION
        perturbed = {sign: resolver.perturbed(sign, step, dx, dy, eps) for sign in SIGNS[step.side]}
        if fallback and any(not z.usable for z in perturbed.values()):
            for sign in (1, -1):
                if sign not in perturbed:
                    perturbed[sign] = resolver.perturbed(sign, step, dx, dy, eps)
        failed = {sign: z.status for sign, z in perturbed.items() if not z.usable}
        record.note_failures(failed)
        chosen = step
        if failed:
            usable = [sign for sign in (1, -1) if sign in perturbed and sign not in failed]
            if not (fallback and usable):
                continue
            chosen = step.one_sided(usable[0])
            perturbed = {usable[0]: perturbed[usable[0]]}
            record.one_sided = True
        record.smaller_step |= k > 0
        star = resolver.star if chosen.side == "central" else resolver.refined(eps)
        return finite_difference(structure, star, perturbed, chosen)
    record.lost = True
    return None


# (re-solver, dx, dy) -> the (sign, step) re-solves its item's gradient starts with
FirstReSolves = Callable[[ItemReSolver, np.ndarray, "np.ndarray | None"], Sequence[tuple[int, Step]]]


# (re-solver, dx, dy, record) -> the item's data gradient, or None when it has none
ItemGradient = Callable[[ItemReSolver, np.ndarray, "np.ndarray | None", ItemRecord], "DataGradient | None"]


def differentiate_items(
    solver: ConeSolver,
    program: ProgramBatch,
    solved: SolvedChunk,
    dx: np.ndarray,
    dy: np.ndarray | None,
    start: int,
    item_gradient: ItemGradient,
    first_re_solves: FirstReSolves | None = None,
) -> ChunkGradient:
    """The per-item loop every LPGD variant shares: ``item_gradient(resolver, dx_i, dy_i, record)``
    for each usable forward solution; the records of items with something to report are kept,
    with a note when dependent equality rows explain infeasible re-solves. The re-solves that
    ``first_re_solves`` names are solved for all items first, in one call where the backend
    can (the item logic is the same either way)."""
    chunk = ChunkReSolves.of(solver, program, solved)
    items = {
        i: ItemInput(chunk.item(i, star), dx[i], None if dy is None else dy[i])
        for i, star in enumerate(solved.solutions)
        if star.usable
    }
    if first_re_solves is not None:
        chunk.solve_ahead(list(items.values()), first_re_solves)
    grads: list[DataGradient | None] = []
    records: dict[int, ItemRecord] = {}
    note: str | None = None
    for i in range(len(solved.solutions)):
        if i not in items:
            grads.append(None)
            continue
        record, resolver, item_dy = ItemRecord(), items[i].resolver, items[i].dy
        grads.append(item_gradient(resolver, items[i].dx, item_dy, record))
        if record.eventful:
            records[start + i] = record
        if note is None and item_dy is not None and INFEASIBLE in record.failed.values():
            note = dependent_equalities(resolver.base)
    return ChunkGradient(grads, records, note)


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


def _inf_norm(v: np.ndarray) -> float:
    return float(np.max(np.abs(v), initial=0.0))


def warn_unresolvable(records: dict[int, ItemRecord], method: str, remedy: str) -> None:
    """One warning for the items whose perturbation was below the solver's tightest accuracy
    (their gradient is mostly solver noise), naming the first few items and their signals."""
    weak = {i: r.unresolvable_signal for i, r in records.items() if r.unresolvable_signal is not None}
    if not weak:
        return
    listed = ", ".join(f"item {i}: signal {s:.1e}" for i, s in list(weak.items())[:_MAX_LISTED])
    warn_user(
        f"{method}: the perturbation tau * |(dx, dy)| is too small for the solver to resolve "
        f"({listed}; re-solves stop at {EPS_FRACTION:g} x that signal, but at least at the solver's "
        f"tightest tolerance), so those gradients are mostly solver noise. {remedy}",
        {i: f"signal {s:.1e}" for i, s in weak.items()},
    )
