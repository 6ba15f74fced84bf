"""The small protocol every solver backend implements, and what backends share.

A backend turns a ``ConeProgram`` into a ``Solution``. When the caller passes a
``workspace`` (a dict it owns, for programs that share ``A`` and ``P``), the backend keeps its
solver object there, with its factorization, and only updates ``b`` and ``c`` for the next
program, where ``reuses_workspace`` says that pays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any, Protocol

import numpy as np

from cvxlpgd.cone import ConeProgram, Solution

Workspace = dict


class ConeSolver(Protocol):
    name: str
    # Whether a workspace pays off across programs that share A and P (see each backend).
    reuses_workspace: bool

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
    ) -> Solution: ...


def workspace_solver(
    workspace: Workspace, key: Hashable, program: ConeProgram, build: Callable[[ConeProgram], Any]
) -> Any:
    """The solver object under ``key`` in ``workspace``, built for ``program`` on a miss. The
    caller updates ``b`` and ``c`` before solving. (Building from the real data matters: Clarabel
    scales the problem by the data it is built with; built from zero b and c, its LPGD gradients
    at tau = 1e-4 were 300x less accurate.)"""
    if key not in workspace:
        workspace[key] = build(program)
    return workspace[key]


# Settings every backend understands, under these names (translated by each backend).
COMMON_SETTINGS: dict[str, Any] = {"eps": 1e-6, "max_iters": 1}


def _check_range(solver: str, key: str, value: Any) -> None:
    """Tolerances must be positive and finite, iteration limits at least 1, time limits >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if key.startswith(("eps", "tol")) and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{solver} setting {key!r} must be a finite number > 0, got {value!r}.")
    if key.startswith("max_iter") and value < 1:
        raise ValueError(f"{solver} setting {key!r} must be at least 1, got {value!r}.")
    if key.startswith("time_limit") and not value >= 0:
        raise ValueError(f"{solver} setting {key!r} must be >= 0, got {value!r}.")


def check_settings(
    solver: str,
    given: Mapping[str, Any],
    defaults: Mapping[str, Any],
    choices: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """Validate settings against known names, their defaults' types, ranges and allowed values."""
    settings = {}
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ValueError(f"Unknown {solver} setting {key!r}. Known settings: {known}.")
        if isinstance(value, np.generic):
            value = value.item()
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
        _check_range(solver, key, value)
        if choices and key in choices and value not in choices[key]:
            allowed = sorted(choices[key])
            raise ValueError(f"{solver} setting {key!r} must be one of {allowed}, got {value!r}.")
        settings[key] = value
    return settings


def split_common(solver: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(validated ``eps`` / ``max_iters``, the backend's own settings) from ``solver_args``."""
    common = check_settings(solver, {k: v for k, v in given.items() if k in COMMON_SETTINGS}, COMMON_SETTINGS)
    return common, {k: v for k, v in given.items() if k not in COMMON_SETTINGS}
