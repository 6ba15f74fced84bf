"""Split a batch into contiguous chunks and run per-chunk work on an executor.

SCS and Clarabel release the GIL while they solve, so a thread pool gives real parallelism;
executors whose workers are other processes or machines (process pools, loky, Dask, Ray) get
the same chunks, pickled. One chunk per worker (as many as the executor runs at once) keeps the
per-task overhead small; the items of a chunk run in order in one task, so per-chunk state (a
solver workspace) is never used by two threads at once, and a given batch always meets it in
the same order (bitwise reproducible results, on any executor with as many workers).

The calling thread works too: it takes chunks that no worker has started yet. So a layer called
from a task of its own executor (a saturated pool whose workers all wait on layers) cannot
deadlock, and an interrupt (Ctrl-C) stops the call after the chunks already running, abandoning
the rest.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from cvxlpgd.cone import INTERRUPTED

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
# Read once: os.cpu_count() costs about 10 us a call here, and the default pool is looked
# up on every layer call.
_CORES = os.cpu_count() or 1


def thread_pool(workers: int = -1) -> ThreadPoolExecutor:
    """A process-wide thread pool with ``workers`` threads (-1: one per core), made on first use."""
    size = _CORES if workers == -1 else workers
    with _pools_lock:
        if size not in _pools:
            _pools[size] = ThreadPoolExecutor(max_workers=size, thread_name_prefix="cvxlpgd")
        return _pools[size]


def default_executor() -> ThreadPoolExecutor:
    """The process-wide thread pool with one worker per core."""
    return thread_pool(-1)


def _forget_pools() -> None:
    """In a forked child (a DataLoader worker), the parent's pool threads do not exist: a pool
    inherited from the parent would accept work and never run it. Start afresh on first use."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def worker_count(executor: Executor) -> int | None:
    """How many tasks ``executor`` runs at once, or None when it does not say.

    Read from the executor, never from this machine's core count: a process pool or a cluster
    has as many workers as it was given. Where a library has a public way to ask, that is used
    (Dask: the client's ``nthreads()``; an executor of one's own may expose ``max_workers``).
    The standard pools and loky's have none; they keep the ``max_workers`` they were built with
    (or their documented default) in ``_max_workers``, which is read instead. Dask's
    ``ClientExecutor`` likewise keeps its client only as ``_client``.
    """
    count = getattr(executor, "max_workers", None)
    if count is None and _is_dask(executor):
        count = sum(executor._client.nthreads().values())
    if count is None:
        count = getattr(executor, "_max_workers", None)
    return count if isinstance(count, int) else None


def _is_dask(executor: Executor) -> bool:
    module = sys.modules.get("distributed.cfexecutor")  # imported by whoever made the executor
    return module is not None and isinstance(executor, module.ClientExecutor)


def chunk_bounds(batch_size: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous ``(start, stop)`` item ranges (fewer if the batch is smaller)."""
    chunks = max(1, min(batch_size, chunks))
    edges = [batch_size * k // chunks for k in range(chunks + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def in_process(executor: Executor | None) -> bool:
    """Whether the executor's workers share this process's memory (results need not pickle)."""
    return executor is None or isinstance(executor, ThreadPoolExecutor)


class _Chunks:
    """Chunks waiting to run; whoever claims one first (a worker or the caller) runs it."""

    def __init__(self, work: Callable[..., Any], arguments: Sequence[tuple[Any, ...]]):
        self.work, self.arguments = work, arguments
        self.results: list[Any] = [None] * len(arguments)
        self.next, self.lock = 0, threading.Lock()

    def claim(self) -> int | None:
        with self.lock:
            if self.next >= len(self.arguments):
                return None
            self.next += 1
            return self.next - 1

    def abandon(self) -> None:
        """Let no one start another chunk."""
        with self.lock:
            self.next = len(self.arguments)

    def run_next(self) -> bool:
        """Run the next unclaimed chunk; False when there was none."""
        k = self.claim()
        if k is None:
            return False
        self.results[k] = self.work(*self.arguments[k])
        return True


def run_chunks(
    work: Callable[..., T],
    arguments: Sequence[tuple[Any, ...]],
    executor: Executor | None,
    stop: threading.Event | None = None,
) -> list[T]:
    """``[work(*args) for args in arguments]``, the chunks spread over ``executor`` and this thread.

    On any exception, ``stop`` is set (the chunks' ``Stoppable`` solvers watch it)."""
    if executor is None or len(arguments) == 1:
        return [work(*args) for args in arguments]
    if not in_process(executor):
        return _run_elsewhere(work, arguments, executor)
    try:
        return _run_here(work, arguments, executor, stop)
    finally:
        _keep_python_interrupts()


def _keep_python_interrupts() -> None:
    """A solver on a worker thread may install a C-level SIGINT handler for its solve, and when
    two solves overlap one can leave its handler installed (measured with Gurobi: every later
    Ctrl-C was swallowed). Re-installing Python's own handler from the main thread after each
    call keeps Ctrl-C a KeyboardInterrupt."""
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGINT)
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def _run_here(
    work: Callable[..., T],
    arguments: Sequence[tuple[Any, ...]],
    executor: Executor,
    stop: threading.Event | None,
) -> list[T]:
    """The chunks on a thread pool's workers and on this thread (see ``run_chunks``)."""
    chunks = _Chunks(work, arguments)
    helpers = [_submit(executor, chunks.run_next, ()) for _ in range(len(arguments) - 1)]
    try:
        while chunks.run_next():
            pass
        for helper in helpers:
            if not helper.cancel():  # a helper that never started is not waited for
                helper.result()  # one that started finishes its chunk (or found none)
    except BaseException as error:
        chunks.abandon()
        if stop is not None:
            stop.set()
        # Wait for the chunks already running (the caller stops them at their next solve), so
        # that no solve of this call overlaps the next call; those not started never will.
        started = [helper for helper in helpers if not helper.cancel()]
        reasons = [helper.exception() for helper in started]
        if isinstance(error, Abandoned):  # another chunk stopped the call: raise its reason
            raise next(r for r in reasons if r is not None and not isinstance(r, Abandoned)) from None
        raise
    return chunks.results


def _run_elsewhere(
    work: Callable[..., T], arguments: Sequence[tuple[Any, ...]], executor: Executor
) -> list[T]:
    """One task per chunk on workers in other processes or machines; everything is pickled
    there and back. On any exception (Ctrl-C included) the tasks not yet started are cancelled."""
    futures = [_submit(executor, work, args) for args in arguments]
    try:
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        raise


class Abandoned(Exception):
    """Raised inside a chunk whose call was interrupted: the chunk stops at its next solve."""


class Stoppable:
    """A solver whose interrupted solve (SCS turns Ctrl-C into a status) raises KeyboardInterrupt,
    wherever it runs; in this process it also refuses new solves once ``stop`` is set, so that the
    chunks of an interrupted call that are already running end at their next item. In another
    process ``stop`` is None (an Event does not pickle)."""

    def __init__(self, solver: Any, stop: threading.Event | None):
        self._solver, self._stop = solver, stop

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unpickling looks up hooks before _solver exists
            raise AttributeError(name)
        return getattr(self._solver, name)

    def solve(self, program: Any, warm_start: Any = None, workspace: Any = None, eps: Any = None) -> Any:
        return self.guard(
            lambda: self._solver.solve(program, warm_start=warm_start, workspace=workspace, eps=eps)
        )

    def guard(self, solve: Callable[[], T], status: Callable[[T], str] = lambda result: result.status) -> T:
        """Run one solve (of the backend, or of another route such as diffcp's) under the rules
        above: none once the call is stopped, and an interrupted one stops the call."""
        if self._stop is not None and self._stop.is_set():
            raise Abandoned
        result = solve()
        if status(result) == INTERRUPTED:  # stop the whole call
            if self._stop is not None:
                self._stop.set()
            raise KeyboardInterrupt(f"{self._solver.name} was interrupted (Ctrl-C).")
        return result


def _submit(executor: Executor, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future:
    try:
        return executor.submit(fn, *args)
    except RuntimeError as error:
        raise RuntimeError(
            f"The layer's executor cannot take work ({error}); it was probably shut down. Pass a "
            "running executor as executor=, or none for cvxlpgd's default thread pool."
        ) from error
