"""The small protocol every solver backend implements, and what backends share.

A backend turns a ``ConeProgram`` into a ``Solution``. When the caller passes a
``workspace`` (a dict it owns, for programs that all share ``A`` and ``P``), the backend keeps
its solver object there, with its factorization, and only updates ``b`` and ``c`` for the next
program. Objects are built from zero ``b`` and ``c`` so that the scalings a solver derives at
setup do not depend on which program came first.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

import numpy as np

from cvxlpgd.cone import ConeProgram, Solution

Workspace = dict


class ConeSolver(Protocol):
    name: str

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
    ) -> Solution: ...


def workspace_solver(
    workspace: Workspace, key: Hashable, program: ConeProgram, build: Callable[[ConeProgram], Any]
) -> Any:
    """The solver object under ``key`` in ``workspace``; on a miss, ``build`` it for ``program``
    with zero ``b`` and ``c``. The caller updates ``b`` and ``c`` before solving."""
    if key not in workspace:
        zero_b, zero_c = np.zeros_like(program.b), np.zeros_like(program.c)
        canonical = ConeProgram(A=program.A, b=zero_b, c=zero_c, dims=program.dims, P=program.P)
        workspace[key] = build(canonical)
    return workspace[key]


def check_settings(solver: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
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
