"""``RayExecutor``: a Ray cluster as a ``concurrent.futures.Executor`` for ``CvxpyLayer(executor=)``.

Importable only where Ray is installed (``pip install ray``). Each chunk of a batch becomes one
Ray task that takes one CPU; Ray pickles its arguments (the chunk's conic data, solver settings,
the gradient method) with cloudpickle, as a process pool would.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import ray


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class RayExecutor(Executor):
    """Runs each submitted call as a Ray task on the cluster that ``ray.init()`` connected to.

    Args:
        max_workers: how many tasks the layer plans for (one chunk each); default: the cluster's
            CPUs when the executor is made.

    Raises:
        RuntimeError: when Ray is not initialized (call ``ray.init()`` first).
    """

    def __init__(self, max_workers: int | None = None):
        if not ray.is_initialized():
            raise RuntimeError(
                "RayExecutor needs a Ray cluster: call ray.init() (or ray.init(address=...)) first."
            )
        self.max_workers = max_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1)(_call)
        self._pending: dict[Future, ray.ObjectRef] = {}
        self._shut_down = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args)`` as one Ray task that takes one CPU, and return its future.

        Raises:
            RuntimeError: after ``shutdown()``.
            TypeError: when keyword arguments are given (the layer passes none).
        """
        if self._shut_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if kwargs:
            raise TypeError("RayExecutor.submit takes positional arguments only.")
        ref = self._remote.remote(fn, *args)
        future = ref.future()
        self._pending[future] = ref
        future.add_done_callback(lambda done: self._pending.pop(done, None))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; ``cancel_futures`` cancels the tasks still pending, ``wait`` waits
        for the others. The Ray cluster itself stays up (``ray.shutdown()`` is the caller's)."""
        self._shut_down = True
        pending = dict(self._pending)
        if cancel_futures:
            for ref in pending.values():
                ray.cancel(ref)
        if wait:
            ray.wait(list(pending.values()), num_returns=len(pending))
