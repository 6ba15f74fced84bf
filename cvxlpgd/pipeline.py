"""The numpy side of one layer call: parameters -> solutions -> outputs, and back.

Forward:  theta --maps--> conic data --method.solve--> (x, y) --recovery--> outputs
Backward: output grads --recovery'--> (dx, dy) --method.differentiate--> data grads --maps'--> dtheta

The batch is cut into chunks; each chunk's work is a call of the gradient method on that
chunk's slice of the conic data, run on the executor. This module only orchestrates.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cvxlpgd.batch import chunk_bounds, in_process, run_chunks
from cvxlpgd.cone import OPTIMAL_INACCURATE, Solution
from cvxlpgd.errors import SolverError, warn_user
from cvxlpgd.gradients.base import GradientMethod, SolvedChunk
from cvxlpgd.program import CompiledProblem, DataGradient, ProgramBatch
from cvxlpgd.solvers import ConeSolver

FailurePolicy = Literal["raise", "nan"]
FAILURE_POLICIES = ("raise", "nan")
_MAX_LISTED = 5


def _listing(statuses: dict[int, str]) -> str:
    items = list(statuses.items())
    text = ", ".join(f"item {i}: {s}" for i, s in items[:_MAX_LISTED])
    return text + (f", and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


@dataclass
class LayerCall:
    """One forward call, and what its backward needs."""

    compiled: CompiledProblem
    solver: ConeSolver
    method: GradientMethod
    on_failure: FailurePolicy
    executor: Executor | None
    program: ProgramBatch | None = None
    bounds: list[tuple[int, int]] = field(default_factory=list)
    solved: list[SolvedChunk] = field(default_factory=list)

    @property
    def solutions(self) -> list[Solution]:
        return [s for chunk in self.solved for s in chunk.solutions]

    def forward(self, theta: np.ndarray, differentiable: bool) -> list[np.ndarray]:
        self.program = program = self.compiled.maps.apply(theta)
        self.bounds = chunk_bounds(program.batch_size, self.executor)
        keep = in_process(self.executor)
        self.solved = run_chunks(
            self.method.solve,
            [(self.solver, program.slice(lo, hi), keep, differentiable) for lo, hi in self.bounds],
            self.executor,
        )
        solutions = self.solutions
        self._check_statuses(solutions)
        x = np.stack([s.x for s in solutions])
        y = np.stack([s.y for s in solutions])
        failed = np.array([not s.usable for s in solutions], dtype=bool)
        x[failed], y[failed] = np.nan, np.nan
        return self.compiled.recovery.apply(x, y)

    def _check_statuses(self, solutions: list[Solution]) -> None:
        bad = {i: s.status for i, s in enumerate(solutions) if not s.usable}
        name = self.solver.name
        if bad and self.on_failure == "raise":
            raw = {i: solutions[i].solver_status for i in bad}
            raise SolverError(
                f"{name} failed on {len(bad)} of {len(solutions)} batch item(s): {_listing(bad)} "
                f"({name} said: {_listing(raw)}). Pass on_failure='nan' to continue with NaN outputs "
                "and zero gradient for failed items.",
                bad,
            )
        if bad:
            warn_user(f"{name} failed on batch item(s) {_listing(bad)}; their outputs are NaN.")
        inaccurate = [i for i, s in enumerate(solutions) if s.status == OPTIMAL_INACCURATE]
        if inaccurate:
            warn_user(
                f"{name} solved {len(inaccurate)} batch item(s) only inaccurately (items "
                f"{inaccurate[:_MAX_LISTED]}); consider tighter solver_args or more iterations.",
            )

    def backward(self, output_grads: list[np.ndarray]) -> np.ndarray:
        """Output gradients (B, *shape) -> gradient w.r.t. theta (B, p)."""
        dx, dy = self.compiled.recovery.adjoint(output_grads)
        dy = dy if self.compiled.recovery.uses_duals else None
        program = self.program
        results = run_chunks(
            self.method.differentiate,
            [
                (self.solver, program.slice(lo, hi), solved, dx[lo:hi], None if dy is None else dy[lo:hi], lo)
                for (lo, hi), solved in zip(self.bounds, self.solved, strict=True)
            ],
            self.executor,
        )
        self.method.report(results, raise_errors=self.on_failure == "raise")
        grads = DataGradient.stack([g for r in results for g in r.grads], program.structure)
        return self.compiled.maps.adjoint(grads)
