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
class ItemRecord:
    """What one item's re-solves met, for the method's ``report``."""

    failed: dict[int, str] = field(default_factory=dict)  # sign (+1: c + tau dx) -> failed status
    failed_solves: int = 0
    one_sided: bool = False  # a side failed, so the other side's one-sided difference was used
    smaller_step: bool = False  # the first step failed, a smaller one worked
    kept_small_step: bool = False  # the finite step failed: the small step's gradient was kept
    lost: bool = False  # no step worked: the item has no gradient
    unresolvable_signal: float | None = None  # a perturbation below the solver's tightest accuracy

    def note_failures(self, failed: dict[int, str]) -> None:
        self.failed.update(failed)
        self.failed_solves += len(failed)

    @property
    def eventful(self) -> bool:
        """Whether the report has anything to say about this item."""
        return bool(self.failed_solves or self.lost or self.unresolvable_signal is not None)


@dataclass
class ChunkGradient:
    """Per-item data gradients of one chunk (None: no gradient for that item), the records of
    the items whose re-solves met trouble (by batch item), and why re-solves were infeasible
    when dependent equality rows explain it."""

    grads: list[DataGradient | None]
    records: dict[int, ItemRecord] = field(default_factory=dict)
    dependent_equalities: str | None = None


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
