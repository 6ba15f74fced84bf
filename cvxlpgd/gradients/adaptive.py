"""The default gradient: exact where a derivative exists, LPGD's finite step where the solution
map is piecewise constant, scale-free (docs/design.md, "The default gradient").

Which rule a data block gets is read off the program's structure, not off whether a small step
happened to move the solution (on a QP an unmoved solution is the true zero derivative):

- A program with a quadratic term or a curved cone: the exact derivative, one linear solve with
  the KKT system at the solution (``kkt.py``); where that system is singular or a cone has no
  projection derivative, central LPGD at a small relative step (its tau -> 0 limit).
- An LP (or MILP): x is piecewise constant in c (and y in b), so the costs (and, when duals are
  outputs, every block) take LPGD's finite step: the secant between the re-solves at a large
  relative step on the lower side (c + tau dx, towards the solution the loss prefers) and a
  moderate one on the upper side (c - tau dx). The other parametrized blocks (b, A with primal
  outputs: x is piecewise linear there) take the small step.

Steps are relative per item, ``tau_i = rel / r_i`` with ``r_i = max(|dx|_D / s_c, |dy| / s_b)``,
so the estimator is homogeneous of degree 1 in the incoming gradient (a batch mean or sum and the
DDP world size do not change it). On an LP, ``|.|_D`` measures costs without their components in
the row space of the equality constraints, which change the objective by a constant on the
feasible set and so no decision (on a grid shortest path: the common shift of all arc costs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache, partial

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import ConeProgram
from cvxlpgd.errors import warn_user
from cvxlpgd.gradients import kkt
from cvxlpgd.gradients.base import ChunkGradient, ItemRecord, SolvedChunk
from cvxlpgd.gradients.engine import ItemReSolver, differentiate_items, lpgd_gradient, warn_unresolvable
from cvxlpgd.gradients.lagrangian import SIGNS, Step
from cvxlpgd.gradients.lpgd import ReSolvingMethod, real_setting
from cvxlpgd.program import Block, ConeStructure, DataGradient, ProgramBatch
from cvxlpgd.solvers.base import ConeSolver

# v -> v without its component in the row space of the equality constraints
Projector = Callable[[np.ndarray], np.ndarray]
COSTS = frozenset({Block.c, Block.P})
# Equality rows are projected out of the step's scale while the dense projector stays this small.
PROJECTOR_LIMIT = 4_000_000


@dataclass(frozen=True)
class AdaptiveLPGD(ReSolvingMethod):
    """Scale-free LPGD, exact on smooth problems: the default of ``gradient="lpgd"``.

    Args:
        small: the relative step of central LPGD where the exact derivative is not available.
        large: the relative step of the finite step's lower side, ``c + tau dx`` (towards the
            solution the loss prefers); None: the small step everywhere.
        large_upper: the relative step of its upper side, ``c - tau dx`` (None: the lower side
            alone, one re-solve). With both, the gradient is the secant between the two
            perturbed solutions, ``(G(z+) - G(z-)) / (tau+ + tau-)``: a step-weighted mix of the
            lower estimate at ``large`` and the upper one at ``large_upper``. A side whose
            re-solve fails (infeasible or unbounded) is replaced by the other side alone. The
            defaults are measured in benchmarks/DEFAULT_GRADIENT.md.
        noise: on a program with curved cones and a linear objective, an exact cost gradient
            below ``noise`` of its natural scale means x is locally constant in c: the finite
            step is used instead.
        retries: a step whose re-solves all fail is retried at a tenth, this many times.

    Raises:
        ValueError: ``small``, ``large`` or ``large_upper`` is not a finite number > 0,
            ``noise`` not one >= 0, or ``retries`` not an integer >= 0.
    """

    small: float = 1e-3
    large: float | None = 10.0
    large_upper: float | None = 0.5
    noise: float = 1e-6
    retries: int = 3

    def __post_init__(self) -> None:
        def check(name: str, bound: str, holds: Callable[[float], bool]) -> None:
            value = getattr(self, name)
            object.__setattr__(self, name, real_setting("AdaptiveLPGD", name, value, bound, holds))

        check("small", "> 0", lambda t: t > 0)
        check("noise", ">= 0", lambda t: t >= 0)
        for name in ("large", "large_upper"):
            if getattr(self, name) is not None:
                check(name, "> 0", lambda t: t > 0)
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
        needed = program.parametrized
        structure = program.structure
        lp = is_lp(structure)
        exact = not lp and kkt.supports(structure.dims, solver.canon_solver)
        equalities = equality_projectors(program)
        planned: dict[int, list[Step]] = {}  # id(re-solver) -> its finite steps

        def finite_steps(resolver: ItemReSolver, dx_i, dy_i) -> list[Step]:
            """An item's finite steps, computed once for the chunk's first re-solves and its gradient."""
            key = id(resolver)  # the re-solvers live for the whole chunk, so ids are not reused
            if key not in planned:
                planned[key] = self._finite_steps(resolver, dx_i, dy_i, equalities(resolver.base))
            return planned[key]

        def item_gradient(resolver: ItemReSolver, dx_i, dy_i, record: ItemRecord) -> DataGradient | None:
            if not _nonzero(dx_i, dy_i):
                return DataGradient.zeros(structure)
            if lp:
                steps = partial(finite_steps, resolver, dx_i, dy_i)
                return self._lp_gradient(resolver, dx_i, dy_i, needed, record, steps)
            grad = kkt.exact_gradient(structure, resolver.base, resolver.star, dx_i, dy_i) if exact else None
            if grad is None:
                grad = self._small_step(resolver, dx_i, dy_i, record)
            if grad is not None and self._locally_constant(resolver, grad, dx_i, needed):
                finite = self._finite_step(resolver, dx_i, dy_i, record, finite_steps(resolver, dx_i, dy_i))
                grad = grad if finite is None else grad.merged(finite, COSTS)
            return grad

        def first_re_solves(resolver: ItemReSolver, dx_i, dy_i) -> list[tuple[int, Step]]:
            """An LP's first finite step, both sides (solved for the whole chunk at once)."""
            if not (lp and _nonzero(dx_i, dy_i) and self._wants_finite(needed, dy_i)):
                return []
            first = finite_steps(resolver, dx_i, dy_i)[0]
            return [(sign, first) for sign in SIGNS[first.side]]

        return differentiate_items(solver, program, solved, dx, dy, start, item_gradient, first_re_solves)

    def _wants_finite(self, needed: frozenset[Block], dy: np.ndarray | None) -> bool:
        """Whether an LP's gradient takes the finite step: for the costs, and with dual outputs
        for every block."""
        return bool(_finite_blocks(needed, dy)) and self.large is not None

    def _lp_gradient(
        self,
        resolver: ItemReSolver,
        dx: np.ndarray,
        dy: np.ndarray | None,
        needed: frozenset[Block],
        record: ItemRecord,
        finite_steps: Callable[[], list[Step]],
    ) -> DataGradient | None:
        """An LP: the finite step for the costs (and with dual outputs, for every block); the
        small step for b and A when only primal outputs reach them."""
        finite_blocks = _finite_blocks(needed, dy)
        wanted = self._wants_finite(needed, dy)
        finite = self._finite_step(resolver, dx, dy, record, finite_steps()) if wanted else None
        if finite is None and wanted:
            record.kept_small_step = True
        rest = needed - (finite_blocks if finite is not None else frozenset())
        if not rest:
            return finite
        small = self._small_step(resolver, dx, dy, record)
        if small is None or finite is None:
            return small if small is not None else finite
        return small.merged(finite, finite_blocks)

    def _finite_step(
        self,
        resolver: ItemReSolver,
        dx: np.ndarray,
        dy: np.ndarray | None,
        record: ItemRecord,
        steps: list[Step],
    ) -> DataGradient | None:
        """LPGD's finite step at the large relative steps (one side alone where the other fails)."""
        return lpgd_gradient(resolver, dx, dy, steps, fallback=True, record=record)

    def _finite_steps(
        self, resolver: ItemReSolver, dx: np.ndarray, dy: np.ndarray | None, equalities: Projector | None
    ) -> list[Step]:
        """The finite step and its retries, each a tenth of the one before; its scale leaves out
        what ``equalities`` projects away."""
        r = self._ratio(resolver, dx, dy, equalities)
        if self.large_upper is None:
            first = Step(self.large / r, side="lower")
        else:
            first = Step(self.large / r, side="central", upper_tau=self.large_upper / r)
        return [first.scaled(t) for t in self._tenths() if self.large * t > self.small]

    def _small_step(
        self, resolver: ItemReSolver, dx: np.ndarray, dy: np.ndarray | None, record: ItemRecord
    ) -> DataGradient | None:
        """Central LPGD at the small relative step: the derivative to O(small^2)."""
        r = self._ratio(resolver, dx, dy, None)
        steps = [Step(self.small * t / r) for t in self._tenths()]
        return lpgd_gradient(resolver, dx, dy, steps, fallback=True, record=record)

    def _tenths(self) -> list[float]:
        return [10.0**-k for k in range(self.retries + 1)]

    def _ratio(
        self, resolver: ItemReSolver, dx: np.ndarray, dy: np.ndarray | None, equalities: Projector | None
    ) -> float:
        """r = max(|dx|_D / s_c, |dy| / s_b): the relative size of the incoming gradient."""
        base, star = resolver.base, resolver.star
        s_c, s_b = cost_scale(base.c, base.P, star.x, equalities), float(np.linalg.norm(base.b)) or 1.0
        d = dx if equalities is None else equalities(dx)
        r = float(np.linalg.norm(d)) / s_c
        if dy is not None:
            r = max(r, float(np.linalg.norm(dy)) / s_b)
        if r == 0.0:  # dx only in the row space of the equalities: it changes no decision
            r = float(np.linalg.norm(dx)) / s_c
        return r

    def _locally_constant(
        self, resolver: ItemReSolver, grad: DataGradient, dx: np.ndarray, needed: frozenset[Block]
    ) -> bool:
        """Curved cones, a linear objective: an exact cost gradient that is zero to ``noise``
        means the solution sits where it is locally constant in c (a vertex of the polyhedral
        part), where LPGD's finite step is informative and the derivative is not."""
        if self.large is None or resolver.base.P is not None or not (needed & COSTS) or grad.c is None:
            return False
        base, star = resolver.base, resolver.star
        natural = float(np.linalg.norm(dx)) * (1.0 + float(np.linalg.norm(star.x)))
        natural /= cost_scale(base.c, base.P, star.x, None)
        return float(np.linalg.norm(grad.c)) <= self.noise * natural

    def report(self, results: list[ChunkGradient], raise_errors: bool) -> None:
        """One warning per call with the counts; the failed re-solves were handled per item."""
        warn_unresolvable(
            {i: r for result in results for i, r in result.records.items()},
            "The default LPGD gradient",
            "Rescale the problem's data, or pass AdaptiveLPGD(small=...) with a larger step.",
        )
        records = {i: r for result in results for i, r in result.records.items() if r.failed_solves}
        if not records:
            return
        hints = {r.dependent_equalities for r in results if r.dependent_equalities}
        counts = {
            "used a smaller step or one side": sum(r.smaller_step or r.one_sided for r in records.values()),
            "kept the small step's gradient for a degenerate block": sum(
                r.kept_small_step for r in records.values()
            ),
            "got zero gradient (no step solved)": sum(r.lost for r in records.values()),
        }
        detail = "; ".join(f"{n} item(s) {what}" for what, n in counts.items() if n)
        total = sum(len(r.grads) for r in results)
        failed = sum(r.failed_solves for r in records.values())
        warn_user(
            f"{failed} perturbed re-solve(s) of the default LPGD gradient were infeasible or unbounded "
            f"in a batch of {total}; {detail}. {' '.join(sorted(hints))}".rstrip(),
            {i: f"{r.failed_solves} failed re-solve(s)" for i, r in records.items()},
        )


def _nonzero(dx: np.ndarray, dy: np.ndarray | None) -> bool:
    return bool(np.any(dx) or (dy is not None and np.any(dy)))


def _finite_blocks(needed: frozenset[Block], dy: np.ndarray | None) -> frozenset[Block]:
    """An LP's blocks that take the finite step: the costs, and with dual outputs every block."""
    with_duals = dy is not None and bool(np.any(dy))
    return needed if with_duals else needed & COSTS


def is_lp(structure: ConeStructure) -> bool:
    """No quadratic term and only zero and nonnegative cones: x is piecewise constant in c."""
    dims = structure.dims
    return structure.P is None and dims.size == dims.zero + dims.nonneg


def cost_scale(c: np.ndarray, P: sp.csc_array | None, x: np.ndarray, equalities: Projector | None) -> float:
    """s_c: the size of the costs, ``|c|_D + |P|_F |x*|`` (1 where zero). ``|P x*|`` would be
    solver noise where the unconstrained minimizer is feasible (``sum_squares(x - a)`` has c = 0
    and P x* ~ 0), while the quadratic's own scale is not."""
    scale = float(np.linalg.norm(c if equalities is None else equalities(c)))
    if P is not None:
        scale += float(sp.linalg.norm(P)) * float(np.linalg.norm(x))
    return scale or 1.0


def equality_projectors(program: ProgramBatch) -> Callable[[ConeProgram], Projector | None]:
    """Each item's equality projector, computed once for a chunk whose items share ``A`` (and
    only when asked for: smooth problems never need it)."""
    if not program.shared_matrices:
        return lambda base: equality_projector(base.A, base.dims.zero)
    shared = cache(lambda: equality_projector(program.item(0).A, program.structure.dims.zero))
    return lambda base: shared()


def equality_projector(A: sp.csc_array, rows: int) -> Projector | None:
    """v -> v without its component in the row space of the first ``rows`` rows of A (the zero
    cone), or None when there are none or the dense projector would be too large."""
    if rows == 0 or rows * A.shape[1] > PROJECTOR_LIMIT:
        return None
    block = sp.csr_array(A[:rows])
    block.sort_indices()
    key = (
        block.shape,
        block.data.tobytes(),
        block.indices.astype(np.int64).tobytes(),
        block.indptr.astype(np.int64).tobytes(),
    )
    basis = _row_space_basis(key)
    return lambda v: v - basis.T @ (basis @ v)


@lru_cache(maxsize=32)
def _row_space_basis(key: tuple[tuple[int, int], bytes, bytes, bytes]) -> np.ndarray:
    """An orthonormal basis (as rows) of the row space of the CSR matrix ``key`` describes;
    cached, since a layer's equality rows are usually the same for every item and call."""
    shape, data, indices, indptr = key
    arrays = (
        np.frombuffer(data),
        np.frombuffer(indices, dtype=np.int64),
        np.frombuffer(indptr, dtype=np.int64),
    )
    _, singular, vt = np.linalg.svd(sp.csr_array(arrays, shape=shape).toarray(), full_matrices=False)
    rank = int(np.sum(singular > singular.max(initial=0.0) * max(shape) * np.finfo(float).eps))
    return vt[:rank]
