"""Run independent per-item work of a batch on an executor.

SCS and Clarabel release the GIL while they solve, so a thread pool gives real parallelism.
Items are grouped into one contiguous chunk per worker to keep the per-task overhead small.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

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


def chunk_count(batch_size: int, executor: Executor | None) -> int:
    """How many contiguous chunks ``map_items`` splits a batch into (fixed for a given executor)."""
    if executor is None or batch_size <= 1:
        return 1
    return min(batch_size, getattr(executor, "_max_workers", None) or os.cpu_count() or 1)


def map_items(work: Callable[[int, int], T], batch_size: int, executor: Executor | None) -> list[T]:
    """``[work(item, chunk) for item in range(batch_size)]``, one task per chunk on ``executor``.

    Items of one chunk run in order in one task, so per-chunk state (a solver workspace) is
    never used by two threads at once, and the same batch always meets it in the same order.
    """
    chunks = chunk_count(batch_size, executor)
    bounds = [batch_size * k // chunks for k in range(chunks + 1)]

    def run_chunk(k: int) -> list[T]:
        return [work(i, k) for i in range(bounds[k], bounds[k + 1])]

    if chunks == 1:
        return run_chunk(0)
    return [result for chunk in executor.map(run_chunk, range(chunks)) for result in chunk]
