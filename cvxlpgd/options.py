"""A layer's options and a call's: resolved in one place, with the same rules for both.

The constructor and every call hand their arguments (``solver``, ``gradient``, ``solver_args``
with cvxpylayers' keys, ``executor``) to ``Options.updated``: a call's arguments override the
layer's for that call only. Which executor a call runs on is decided here too, nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cvxlpgd.batch import default_executor, thread_pool, worker_count
from cvxlpgd.compat import split_peer_args
from cvxlpgd.gradients import AdaptiveLPGD, GradientMethod, lookup_gradient
from cvxlpgd.solvers import ConeSolver, LayerSolver, lookup_solver, make_solver

FailurePolicy = Literal["raise", "nan"]
FAILURE_POLICIES = ("raise", "nan")


@dataclass(frozen=True)
class Options:
    """What a layer (or one call of it) solves with, differentiates with and runs on.

    The forward executor is ``executor`` (the user's) or a thread pool of ``forward_workers``
    threads (cvxpylayers' ``n_jobs_forward``), at most one of the two; neither: the default pool.
    The backward runs on a pool of ``backward_workers`` threads, or where the forward ran.
    """

    solver: LayerSolver = field(default_factory=lambda: lookup_solver("SCS"))
    gradient: GradientMethod = field(default_factory=AdaptiveLPGD)
    settings: Mapping[str, Any] = field(default_factory=dict)
    executor: Executor | None = None
    forward_workers: int | None = None
    backward_workers: int | None = None
    chunks: int | None = None
    on_failure: FailurePolicy = "raise"

    def __post_init__(self) -> None:
        if self.on_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}, got {self.on_failure!r}.")
        check_executor(self.executor, self.chunks)

    @classmethod
    def of_layer(
        cls,
        solver: object,
        verbose: bool,
        solver_args: Mapping[str, Any] | None,
        gradient: object,
        on_failure: FailurePolicy,
        executor: Executor | None,
        chunks: int | None,
    ) -> Options:
        """A layer's options from its constructor's arguments (both front ends take the same)."""
        settings = {**(solver_args or {}), **({"verbose": True} if verbose else {})}
        return cls(chunks=chunks, on_failure=on_failure).updated(solver, gradient, settings, executor)

    def updated(
        self,
        solver: object = None,
        gradient: object = None,
        solver_args: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
    ) -> Options:
        """These options with the given arguments applied (None: keep); each of ``solver``,
        ``gradient`` and ``executor`` may instead come as its cvxpylayers ``solver_args`` key."""
        if solver is None and gradient is None and executor is None and not solver_args:
            return self  # a plain call: the layer's options as they are (frozen, so shared safely)
        peer = split_peer_args(solver_args)
        solver = _one_of("solver", solver, "solve_method", peer.solver)
        gradient = _one_of("gradient", gradient, "mode", peer.gradient)
        _one_of("executor", executor, "n_jobs_forward", peer.forward_workers)
        forward = (
            (self.executor, self.forward_workers)
            if executor is None and peer.forward_workers is None
            else (executor, peer.forward_workers)
        )
        return replace(
            self,
            solver=self.solver if solver is None else lookup_solver(solver),
            gradient=self.gradient if gradient is None else lookup_gradient(gradient),
            settings={**self.settings, **peer.settings},
            executor=forward[0],
            forward_workers=forward[1],
            backward_workers=_first(peer.backward_workers, self.backward_workers),
        )

    def backend(self) -> ConeSolver:
        """The solver backend configured with the settings (which it validates)."""
        return make_solver(self.solver, self.settings)

    @property
    def uses_default_pool(self) -> bool:
        return self.executor is None and self.forward_workers is None

    def chosen_executor(self) -> Executor | None:
        """The forward executor the user asked for (an object or a thread count); None: default."""
        return self.executor if self.forward_workers is None else thread_pool(self.forward_workers)

    def chosen_backward_executor(self) -> Executor | None:
        """The backward executor the user asked for; None: the forward's."""
        return None if self.backward_workers is None else thread_pool(self.backward_workers)

    def forward_executor(self) -> Executor:
        return self.chosen_executor() or default_executor()

    def backward_executor(self) -> Executor:
        return self.chosen_backward_executor() or self.forward_executor()


def check_executor(executor: object, chunks: object = None) -> None:
    """Any ``concurrent.futures.Executor``: a thread pool shares this process's memory, any other
    (process pools, loky, Dask's ``client.get_executor()``, ``cvxlpgd.executors.RayExecutor``)
    gets each chunk's work pickled. The batch is cut into ``chunks`` pieces, by default one per
    worker of the executor, which must then say how many it has."""
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1):
        raise ValueError(
            f"chunks must be a positive integer (or None: one per executor worker), got {chunks!r}."
        )
    if executor is None:
        return
    if not isinstance(executor, Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor (a thread or process pool, loky's, Dask's "
            f"client.get_executor(), cvxlpgd.executors.RayExecutor) or None for cvxlpgd's default "
            f"thread pool, got {type(executor).__name__}."
        )
    if chunks is None and worker_count(executor) is None:
        raise ValueError(
            f"cvxlpgd cannot tell how many workers the {type(executor).__name__} has, so it cannot cut "
            "the batch into one chunk per worker: pass chunks= (e.g. the number of workers) to "
            "CvxpyLayer, or give the executor a max_workers attribute."
        )


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _one_of(name: str, value: object, peer_key: str, peer_value: object) -> object:
    """An argument that may also come as a cvxpylayers ``solver_args`` key: at most one of the two."""
    if value is not None and peer_value is not None:
        raise ValueError(f"Give either {name}= or solver_args[{peer_key!r}], not both.")
    return value if value is not None else peer_value
