"""The implicit (KKT) derivative through diffcp, as cvxpylayers computes it.

diffcp solves the program and factors its derivative in one call, so in this mode the forward
pass goes through diffcp too; under ``torch.no_grad`` it only solves. Its data follow SCS's
conventions (no ``P``: quadratic objectives reach it as cones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import diffcp
import numpy as np
from diffcp.cone_program import solve_internal

from cvxlpgd.batch import Stoppable
from cvxlpgd.cone import ConeProgram, Solution
from cvxlpgd.gradients.base import ChunkGradient, SolvedChunk
from cvxlpgd.program import ConicForm, DataGradient, ProgramBatch
from cvxlpgd.solvers.accuracy import judged
from cvxlpgd.solvers.base import ConeSolver
from cvxlpgd.solvers.builtin import SOLVERS
from cvxlpgd.solvers.scs import cone_dict

Mode = Literal["auto", "dense", "lsqr", "lsmr"]
_MODES = ("auto", "dense", "lsqr", "lsmr")
# The backends diffcp can run (a DiffcpMethod each), for messages.
_DIFFCP_SOLVERS = sorted(name for name, backend in SOLVERS.items() if backend.diffcp is not None)
# Up to this many rows + columns, "auto" uses diffcp's dense factorization (exact, cubic); above,
# LSQR (what cvxpylayers uses). Measured: dense costs 330-550 ms per item at m + n = 936.
DENSE_LIMIT = 200


@dataclass(frozen=True)
class Implicit:
    """The implicit derivative of the KKT conditions (diffcp).

    Args:
        mode: how diffcp solves its derivative system: ``"dense"`` (exact factorization),
            ``"lsqr"`` or ``"lsmr"`` (iterative, for large programs), or ``"auto"``: dense up to
            ``DENSE_LIMIT`` rows + columns, LSQR above.

    Raises:
        ValueError: an unknown ``mode``; at the layer, a solver diffcp cannot run (only
            ``"SCS"`` and ``"CLARABEL"``).
    """

    mode: Mode = "auto"

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"Implicit mode must be one of {list(_MODES)}, got {self.mode!r}.")

    def conic_form(self, solver: ConeSolver) -> ConicForm:
        if solver.diffcp is None:
            raise ValueError(
                f"gradient='implicit' runs through diffcp, which supports the solvers "
                f"{_DIFFCP_SOLVERS}, not {solver.name!r}; use LPGD with {solver.name}."
            )
        return ConicForm(canon_solver="SCS", quad_obj=False)

    def solve(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        keep_state: bool,
        differentiable: bool,
        warm_starts: list[Solution],
    ) -> SolvedChunk:
        """Solve each item through diffcp; the state is the items' adjoint derivatives. Those are
        closures, which do not pickle: without ``keep_state`` the backward derives them again.
        diffcp warm-starts SCS only."""
        usable = [w if w.usable and solver.diffcp.warm_starts else None for w in warm_starts]
        pairs = [
            _guarded(solver)(
                lambda i=i: self._solve_item(
                    program.item(i), solver, differentiable, usable[i] if i < len(usable) else None
                )
            )
            for i in range(program.batch_size)
        ]
        return SolvedChunk([p[0] for p in pairs], [p[1] for p in pairs] if keep_state else None)

    def _solve_item(
        self, program: ConeProgram, solver: ConeSolver, differentiable: bool, warm: Solution | None
    ) -> tuple[Solution, Any]:
        m, n = program.A.shape
        method = solver.diffcp
        differentiable = differentiable and not program.dims.power  # diffcp has no power cone
        data = (program.A.copy(), program.b, program.c, cone_dict(program.dims))
        options = {
            "solve_method": method.solve_method,
            "warm_start": None if warm is None else (warm.x, warm.y, warm.s),
            "raise_on_error": False,
            **solver.settings,
        }
        if differentiable:
            mode = self.mode if self.mode != "auto" else ("dense" if m + n <= DENSE_LIMIT else "lsqr")
            result = diffcp.solve_and_derivative_internal(*data, mode=mode, **options)
        else:
            result = solve_internal(*data, **options)
        info = result["info"]
        x, y, s = (np.asarray(result[key]) for key in ("x", "y", "s"))
        solution = Solution(
            x=x,
            y=y,
            s=s,
            status=judged(program, method.status(info), x, y, s, solver.eps),
            solver_status=str(info["status"]),
            iterations=int(info.get("iter", 0)),
        )
        adjoint = result.get("DT") if differentiable and solution.usable else None
        return solution, adjoint

    def differentiate(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        solved: SolvedChunk,
        dx: np.ndarray,
        dy: np.ndarray | None,
        start: int,
    ) -> ChunkGradient:
        if program.structure.dims.power:
            raise NotImplementedError(
                "gradient='implicit' cannot differentiate through a power cone (diffcp has none); "
                "the forward pass works, for gradients use LPGD (gradient='lpgd')."
            )
        pattern = program.structure.A
        # Copies: arrays unpickled from another process are read-only, and scipy's fancy indexing
        # refuses read-only index arrays.
        rows, cols = pattern.indices.copy(), pattern.columns.copy()
        dy = np.zeros((len(solved.solutions), program.structure.m)) if dy is None else dy
        adjoints = solved.state if solved.state is not None else self._derive_again(solver, program, solved)
        grads: list[DataGradient | None] = []
        for i, adjoint in enumerate(adjoints):
            if adjoint is None:
                grads.append(None)
                continue
            dA, db, dc = adjoint(dx[i], dy[i], np.zeros_like(dy[i]))
            values = np.asarray(dA.tocsr()[rows, cols]).ravel()
            grads.append(DataGradient(A=values, b=np.asarray(db), c=np.asarray(dc), P=None))
        return ChunkGradient(grads)

    def _derive_again(self, solver: ConeSolver, program: ProgramBatch, solved: SolvedChunk) -> list[Any]:
        """The adjoints of a chunk solved in another process: diffcp solves each usable item again,
        exactly as the forward did, and sets up its derivative. Not warm-started: on the 12 x 12
        shortest path (SCS) a warm start saved 30% of the re-solve (12.6 vs 17.6 ms) but ends at
        another point, where the LP's derivative is another (gradients 140% apart); the cold solve
        repeats the forward's, so the gradient is bitwise the one a thread pool gives (unless
        the forward was warm-started with ``warm_start=True``)."""
        return [
            _guarded(solver)(lambda i=i: self._solve_item(program.item(i), solver, True, None))[1]
            if star.usable
            else None
            for i, star in enumerate(solved.solutions)
        ]

    def report(self, results: list[ChunkGradient], raise_errors: bool) -> None:
        """Nothing to say: failed forward items were reported by the forward pass."""


def _guarded(solver: ConeSolver) -> Callable[[Callable[[], tuple[Solution, Any]]], tuple[Solution, Any]]:
    """diffcp solves outside the backend's ``solve``: the call's stop rules (``Stoppable``, in
    the pipeline) must still apply to each of its solves, or Ctrl-C waits for the whole batch."""
    if isinstance(solver, Stoppable):
        return lambda solve: solver.guard(solve, status=lambda pair: pair[0].status)
    return lambda solve: solve()
