"""The small protocol every solver backend implements, and the settings checks they share.

A backend turns a ``ConeProgram`` into a ``Solution``. When the caller passes a ``workspace``
(a dict it owns, used only for programs that share ``A``, ``P`` and the cones, and by one thread
at a time), a backend whose ``reuses_workspace`` is true keeps its solver object there, with its
factorization, and only updates ``b`` and ``c`` for the next program.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
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


# Settings every backend understands under these names (each translates them to its own),
# with the type each must have.
COMMON_SETTING_TYPES: dict[str, type] = {"eps": float, "max_iters": int, "verbose": bool}


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
    types: Mapping[str, type],
    choices: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """Validate settings against known names and their types, ranges and allowed values."""
    settings = {}
    for key, value in given.items():
        if key not in types:
            known = ", ".join(sorted(types))
            raise ValueError(f"Unknown {solver} setting {key!r}. Known settings: {known}.")
        if isinstance(value, np.generic):
            value = value.item()
        expected = types[key]
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
    common = {k: v for k, v in given.items() if k in COMMON_SETTING_TYPES}
    own = {k: v for k, v in given.items() if k not in COMMON_SETTING_TYPES}
    return check_settings(solver, common, COMMON_SETTING_TYPES), own


def types_of(defaults: Mapping[str, Any]) -> dict[str, type]:
    """The type each setting must have, read off a backend's defaults."""
    return {key: type(value) for key, value in defaults.items()}
