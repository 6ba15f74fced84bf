"""The small protocol every solver backend implements, and what backends share.

A backend turns a ``ConeProgram`` into a ``Solution``. When the caller passes a
``reuse_key`` (meaning: ``A`` and ``P`` are the same as for every earlier program with this
key), the backend keeps its solver object, with its factorization, and only updates ``b`` and
``c``. Solver objects live in a per-thread cache, so concurrent calls never share one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

from cvxlpgd.cone import ConeProgram, Solution

_CACHE_ENTRIES_PER_THREAD = 16
_local = threading.local()


class ConeSolver(Protocol):
    name: str

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        reuse_key: Hashable | None = None,
    ) -> Solution: ...


def cached_solver_object(key: Hashable, build: Callable[[], Any]) -> tuple[Any, bool]:
    """This thread's solver object for ``key`` (built on a miss); second item: was it cached."""
    cache: OrderedDict = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = OrderedDict()
    if key in cache:
        cache.move_to_end(key)
        return cache[key], True
    obj = build()
    cache[key] = obj
    if len(cache) > _CACHE_ENTRIES_PER_THREAD:
        cache.popitem(last=False)
    return obj, False


def check_settings(
    solver: str, given: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate user settings against a backend's known settings and their types."""
    settings = {}
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ValueError(f"Unknown {solver} setting {key!r}. Known settings: {known}.")
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise TypeError(
                f"{solver} setting {key!r} must be of type {expected.__name__}, "
                f"got {type(value).__name__} ({value!r})."
            )
        settings[key] = value
    return settings
