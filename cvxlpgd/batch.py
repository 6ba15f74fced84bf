"""Split a batch into contiguous chunks and run per-chunk work on an executor.

SCS and Clarabel release the GIL while they solve, so a thread pool gives real parallelism.
One chunk per worker keeps the per-task overhead small; the items of a chunk run in order in
one task, so per-chunk state (a solver workspace) is never used by two threads at once, and a
given batch always meets it in the same order (bitwise reproducible results).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_default: ThreadPoolExecutor | None = None
_default_lock = threading.Lock()


def default_executor() -> ThreadPoolExecutor:
    """A process-wide thread pool with one worker per core."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="cvxlpgd")
        return _default


def chunk_bounds(batch_size: int, executor: Executor | None) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` item ranges, one per worker (fixed for a given executor)."""
    chunks = 1
    if executor is not None and batch_size > 1:
        chunks = min(batch_size, getattr(executor, "_max_workers", None) or os.cpu_count() or 1)
    edges = [batch_size * k // chunks for k in range(chunks + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def in_process(executor: Executor | None) -> bool:
    """Whether the executor's workers share this process's memory (results need not pickle)."""
    return executor is None or isinstance(executor, ThreadPoolExecutor)


def run_chunks(
    work: Callable[..., T], arguments: Sequence[tuple[Any, ...]], executor: Executor | None
) -> list[T]:
    """``[work(*args) for args in arguments]``, one task per chunk on ``executor``."""
    if executor is None or len(arguments) == 1:
        return [work(*args) for args in arguments]
    futures = [executor.submit(work, *args) for args in arguments]
    return [future.result() for future in futures]
