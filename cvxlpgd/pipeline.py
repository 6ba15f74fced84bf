"""The numpy side of one layer call: parameters -> solutions -> outputs, and back.

Forward:  theta --maps--> conic data --method.solve--> (x, y) --recovery--> outputs
Backward: output grads --recovery'--> (dx, dy) --method.differentiate--> data grads --maps'--> dtheta

The batch is cut into chunks; each chunk's work is a call of the gradient method on that
chunk's slice of the conic data, run on the executor. This module only orchestrates.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cvxlpgd.batch import Stoppable, chunk_bounds, in_process, run_chunks, worker_count
from cvxlpgd.cone import INTERRUPTED, OPTIMAL_INACCURATE, Solution
from cvxlpgd.errors import SolverError, warn_user
from cvxlpgd.gradients.base import ChunkGradient, GradientMethod, SolvedChunk
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
    backward_executor: Executor | None = None  # None: the forward's
    parameter_names: tuple[str, ...] = ()  # the parameter of each entry of theta, for messages
    warm_starts: list[Solution] | None = None  # by batch position, from an earlier call
    chunks: int | None = None  # how many chunks a batch is cut into; None: one per executor worker
    program: ProgramBatch | None = None
    bounds: list[tuple[int, int]] = field(default_factory=list)
    solved: list[SolvedChunk] = field(default_factory=list)

    stop: threading.Event = field(default_factory=threading.Event)

    def _run(self, work, arguments: list[tuple], executor: Executor | None) -> list:
        """Run per-chunk work; on any interruption, chunks still running stop at their next solve."""
        return run_chunks(work, arguments, executor, self.stop)

    @property
    def _chunk_solver(self) -> ConeSolver:
        """The solver the chunks use: one that turns an interrupted solve into KeyboardInterrupt,
        and in this process one that the call can stop."""
        return Stoppable(self.solver, self.stop if in_process(self.executor) else None)

    @property
    def solutions(self) -> list[Solution]:
        return [s for chunk in self.solved for s in chunk.solutions]

    def forward(self, theta: np.ndarray, differentiable: bool) -> list[np.ndarray]:
        self.program = program = self.compiled.maps.apply(theta)
        self._check_finite(theta)
        chunks = self.chunks or (worker_count(self.executor) if self.executor is not None else 1)
        self.bounds = chunk_bounds(program.batch_size, chunks or 1)
        keep = in_process(self.executor)
        solver = self._chunk_solver
        warm = self.warm_starts or []
        self.solved = self._run(
            self.method.solve,
            [(solver, program.slice(lo, hi), keep, differentiable, warm[lo:hi]) for lo, hi in self.bounds],
            self.executor,
        )
        solutions = self.solutions
        self._check_statuses(solutions)
        x = np.stack([s.x for s in solutions])
        y = np.stack([s.y for s in solutions])
        failed = np.array([not s.usable for s in solutions], dtype=bool)
        x[failed], y[failed] = np.nan, np.nan
        return self.compiled.recovery.apply(x, y)

    def _check_finite(self, theta: np.ndarray) -> None:
        """Finite parameters can still overflow in the conic data (1e308 times a coefficient):
        say so, naming the largest parameter, instead of letting the solver fail obscurely."""
        program = self.program
        blocks = {"A": program.A_values, "b": program.b, "c": program.c, "P": program.P_values}
        broken = [
            name for name, values in blocks.items() if values is not None and not np.isfinite(values).all()
        ]
        if not broken:
            return
        largest = int(np.abs(theta).max(axis=0).argmax())
        raise ValueError(
            f"The conic data contain inf or NaN after scaling (in {', '.join(broken)}), although every "
            f"parameter is finite: parameter {self.parameter_names[largest]!r} has entries up to "
            f"{np.abs(theta[:, largest]).max():.3g}. Rescale the parameters (the solvers work in "
            "float64 and need the data well inside its range)."
        )

    def _check_statuses(self, solutions: list[Solution]) -> None:
        bad = {i: s.status for i, s in enumerate(solutions) if not s.usable}
        name, total = self.solver.name, len(solutions)
        if INTERRUPTED in bad.values():
            raise KeyboardInterrupt(f"{name} was interrupted (Ctrl-C) while solving the batch.")
        if bad and self.on_failure == "raise":
            raw = {i: solutions[i].solver_status for i in bad}
            raise SolverError(
                f"{name} failed on {len(bad)} of {total} batch item(s): {_listing(bad)} "
                f"({name} said: {_listing(raw)}). Pass on_failure='nan' to continue with NaN outputs "
                "and zero gradient for failed items.",
                bad,
            )
        if bad:
            warn_user(
                f"{name} failed on {len(bad)} of {total} batch item(s); their outputs are NaN and their "
                "gradients zero (which items and why: layer.last_statuses).",
                bad,
            )
        inaccurate = {i: s.status for i, s in enumerate(solutions) if s.status == OPTIMAL_INACCURATE}
        if inaccurate:
            warn_user(
                f"{name} solved {len(inaccurate)} of {total} batch item(s) only inaccurately (which: "
                "layer.last_statuses); consider tighter solver_args or more iterations.",
                inaccurate,
            )

    def backward(self, output_grads: list[np.ndarray]) -> np.ndarray:
        """Output gradients (B, *shape) -> gradient w.r.t. theta (B, p)."""
        dx, dy = self.compiled.recovery.adjoint(output_grads)
        # Contiguous rows, as a chunk unpickled in another process has them: BLAS reductions over
        # a strided row and over a contiguous one round differently (the implicit gradient of an
        # LP magnifies that), and the gradient must not depend on where a chunk runs.
        dx = np.ascontiguousarray(dx)
        dy = np.ascontiguousarray(dy) if self.compiled.recovery.uses_duals else None
        program, solver, varying = self.program, self._chunk_solver, self.compiled.maps.varying
        results = self._run(
            differentiate_chunk,
            [
                (self.method, varying, solver, program.slice(lo, hi), solved, dx[lo:hi])
                + (None if dy is None else dy[lo:hi], lo)
                for (lo, hi), solved in zip(self.bounds, self.solved, strict=True)
            ],
            self.backward_executor or self.executor,
        )
        self.method.report(results, raise_errors=self.on_failure == "raise")
        grads = DataGradient.stack([g for r in results for g in r.grads], program.structure, varying)
        return self.compiled.maps.adjoint(grads, program.batch_size)


def differentiate_chunk(
    method: GradientMethod,
    varying: frozenset[str],
    solver: ConeSolver,
    program: ProgramBatch,
    solved: SolvedChunk,
    dx: np.ndarray,
    dy: np.ndarray | None,
    start: int,
) -> ChunkGradient:
    """``method.differentiate`` on one chunk, keeping only the data-gradient blocks that some
    parameter enters (``varying``): the others never reach a parameter, so a worker in another
    process does not send them back (for a cost-only LP, only ``c``)."""
    result = method.differentiate(solver, program, solved, dx, dy, start)
    result.grads = [None if g is None else g.restricted(varying) for g in result.grads]
    return result
