"""One layer call as a chain of stages, each with ``apply`` and ``adjoint`` (numpy only).

A call runs its stages in order, and its backward runs their adjoints in reverse (as CVXPY's
reduction chains apply and invert their reductions):

    values (one array per parameter)
      [dgp.LogParameters]      logs of a geometric program's positive parameters   (gp=True)
      parameter_values.Flatten  the values stacked as theta (B, p), broadcast over the batch
      ConicData                 theta -> the conic data of the batch (the compiled affine maps)
      Solve                     conic data -> (x, y) per item: the gradient method's solves, in chunks
      Recover                   (x, y) -> the requested variables and duals (B, *shape)
      [dgp.ExpVariables]        exp of a geometric program's primal outputs         (gp=True)
      parameter_values.Unbatch  drop the batch dimension when no input had one

A stage object belongs to one call and keeps what its adjoint needs. A front end (PyTorch, JAX)
turns its arrays into numpy, runs ``Chain.forward``, and in its backward ``Chain.backward``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from cvxlpgd.batch import Stoppable, chunk_bounds, in_process, run_chunks, worker_count
from cvxlpgd.cone import INTERRUPTED, OPTIMAL_INACCURATE, Solution
from cvxlpgd.errors import SolverError, warn_user
from cvxlpgd.gradients.base import ChunkGradient, GradientMethod, SolvedChunk
from cvxlpgd.options import FailurePolicy
from cvxlpgd.program import BLOCKS, DataGradient, ProblemMaps, ProgramBatch, Recovery
from cvxlpgd.solvers import ConeSolver

_MAX_LISTED = 5


class Stage(Protocol):
    """One step of a call: ``apply`` maps its input forward, ``adjoint`` maps the gradient with
    respect to its output back to the gradient with respect to its input."""

    def apply(self, value: Any) -> Any: ...

    def adjoint(self, grad: Any) -> Any: ...


class Chain:
    """Stages run in order forward, and their adjoints in reverse order backward."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)

    def forward(self, value: Any) -> Any:
        for stage in self.stages:
            value = stage.apply(value)
        return value

    def backward(self, grad: Any) -> Any:
        for stage in reversed(self.stages):
            grad = stage.adjoint(grad)
        return grad


class ConicData:
    """theta (B, p) -> the conic data of the batch, by the compiled affine maps."""

    def __init__(self, maps: ProblemMaps, parameter_names: tuple[str, ...]) -> None:
        self.maps = maps
        self.parameter_names = parameter_names  # the parameter of each entry of theta, for messages
        self.batch_size = 0

    def apply(self, theta: np.ndarray) -> ProgramBatch:
        program = self.maps.apply(theta)
        self._check_finite(program, theta)
        self.batch_size = program.batch_size
        return program

    def adjoint(self, grad: DataGradient) -> np.ndarray:
        return self.maps.adjoint(grad, self.batch_size)

    def _check_finite(self, program: ProgramBatch, theta: np.ndarray) -> None:
        """Finite parameters can still overflow in the conic data (1e308 times a coefficient):
        say so, naming the largest parameter, instead of letting the solver fail obscurely."""
        broken = [
            block.value
            for block in BLOCKS
            if (values := program.values(block)) is not None and not np.isfinite(values).all()
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


class Solve:
    """Conic data -> (x, y) of every item (NaN for failed ones), by the gradient method's solves
    on chunks of the batch; the adjoint is the method's data gradient, chunk by chunk.

    The batch is cut into ``chunks`` pieces (None: one per worker of the forward executor); the
    backward runs on the same pieces, on ``backward_executor``."""

    def __init__(
        self,
        solver: ConeSolver,
        method: GradientMethod,
        on_failure: FailurePolicy,
        executor: Executor,
        backward_executor: Executor,
        chunks: int | None,
        differentiable: bool,
        warm_starts: list[Solution] | None,
    ) -> None:
        self.solver, self.method, self.on_failure = solver, method, on_failure
        self.executor, self.backward_executor = executor, backward_executor
        self.chunks, self.differentiable = chunks, differentiable
        self.warm_starts = warm_starts or []  # by batch position, from an earlier call
        self.stop = threading.Event()  # set on an interruption: running chunks stop at their next solve
        self.program: ProgramBatch | None = None
        self.bounds: list[tuple[int, int]] = []
        self.solved: list[SolvedChunk] = []

    @property
    def solutions(self) -> list[Solution]:
        return [s for chunk in self.solved for s in chunk.solutions]

    @property
    def _chunk_solver(self) -> ConeSolver:
        """The solver the chunks use: one that turns an interrupted solve into KeyboardInterrupt,
        and in this process one that the call can stop."""
        return Stoppable(self.solver, self.stop if in_process(self.executor) else None)

    def apply(self, program: ProgramBatch) -> tuple[np.ndarray, np.ndarray]:
        self.program = program
        self.bounds = chunk_bounds(program.batch_size, self.chunks or worker_count(self.executor) or 1)
        keep, solver, warm = in_process(self.executor), self._chunk_solver, self.warm_starts
        self.solved = run_chunks(
            self.method.solve,
            [
                (solver, program.slice(lo, hi), keep, self.differentiable, warm[lo:hi])
                for lo, hi in self.bounds
            ],
            self.executor,
            self.stop,
        )
        solutions = self.solutions
        self._check_statuses(solutions)
        x = np.stack([s.x for s in solutions])
        y = np.stack([s.y for s in solutions])
        failed = [i for i, s in enumerate(solutions) if not s.usable]
        if failed:
            x[failed], y[failed] = np.nan, np.nan
        return x, y

    def adjoint(self, grad: tuple[np.ndarray, np.ndarray | None]) -> DataGradient:
        dx, dy = grad
        program, solver = self.program, self._chunk_solver
        results = run_chunks(
            differentiate_chunk,
            [
                (self.method, program.parametrized, solver, program.slice(lo, hi), solved, dx[lo:hi])
                + (None if dy is None else dy[lo:hi], lo)
                for (lo, hi), solved in zip(self.bounds, self.solved, strict=True)
            ],
            self.backward_executor,
            self.stop,
        )
        self.method.report(results, raise_errors=self.on_failure == "raise")
        grads = [g for r in results for g in r.grads]
        return DataGradient.stack(grads, program.structure, program.parametrized)

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


class Recover:
    """(x, y) -> one (B, *shape) array per requested variable or dual, by the recovery map."""

    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery

    def apply(self, solution: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
        return self.recovery.apply(*solution)

    def adjoint(self, grads: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        dx, dy = self.recovery.adjoint(grads)
        # Contiguous rows, as a chunk unpickled in another process has them: BLAS reductions over
        # a strided row and over a contiguous one round differently (the implicit gradient of an
        # LP magnifies that), and the gradient must not depend on where a chunk runs.
        return np.ascontiguousarray(dx), np.ascontiguousarray(dy) if self.recovery.uses_duals else None


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


def _listing(statuses: dict[int, str]) -> str:
    items = list(statuses.items())
    text = ", ".join(f"item {i}: {s}" for i, s in items[:_MAX_LISTED])
    return text + (f", and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")
