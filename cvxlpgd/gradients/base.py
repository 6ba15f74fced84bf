"""The small protocol every gradient method implements.

A method is a frozen, validated configuration (``LPGD(...)``, ``Implicit(...)``). The pipeline
asks it which conic form it needs, then hands it one chunk of a batch at a time: ``solve`` runs
the forward solves of a chunk and ``differentiate`` turns the chunk's incoming gradients into
gradients w.r.t. the conic data. Both are plain functions of (solver, slice of conic data,
per-item inputs), so a chunk can run on any executor; ``report`` then speaks once per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cvxlpgd.cone import Solution
from cvxlpgd.program import ConicForm, DataGradient, ProgramBatch
from cvxlpgd.solvers.base import ConeSolver


@dataclass
class SolvedChunk:
    """The forward solutions of one chunk, and what the method keeps for their backward."""

    solutions: list[Solution]
    state: Any = None


@dataclass
class ChunkGradient:
    """Per-item data gradients of one chunk (None: no gradient for that item) and the problems
    met on the way, keyed and worded by the method for its ``report``."""

    grads: list[DataGradient | None]
    problems: dict[Any, Any] = field(default_factory=dict)


@runtime_checkable
class GradientMethod(Protocol):
    def conic_form(self, solver: ConeSolver) -> ConicForm:
        """The conic data this method needs from CVXPY for ``solver``; raises if unsupported."""
        ...

    def solve(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        keep_state: bool,
        differentiable: bool,
        warm_starts: list[Solution],
    ) -> SolvedChunk:
        """Solve every item of a chunk. ``keep_state``: the result stays in this process, so it
        may hold objects that do not pickle (solver workspaces); ``differentiable``: a backward
        may follow (else no derivative work is due); ``warm_starts``: earlier solutions of the
        chunk's first items, for solvers that can start from one (may be shorter, or empty)."""
        ...

    def differentiate(
        self,
        solver: ConeSolver,
        program: ProgramBatch,
        solved: SolvedChunk,
        dx: np.ndarray,
        dy: np.ndarray | None,
        start: int,
    ) -> ChunkGradient:
        """Gradients w.r.t. the conic data of a chunk whose first item is batch item ``start``,
        from the incoming gradients ``dx`` (and ``dy`` when duals are outputs)."""
        ...

    def report(self, results: list[ChunkGradient], raise_errors: bool) -> None:
        """Warn about, or (``raise_errors``) raise for, the problems of one call's backward."""
        ...
