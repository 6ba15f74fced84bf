"""A user's backend object, checked against the solver protocol and with its defaults filled in.

The object is checked once, when the layer is built (``lookup_solver``), so that a wrong object
fails there with the attribute it lacks; its answers are checked on every solve, so that a wrong
answer names the backend instead of breaking the gradient far from it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cvxlpgd.cone import CONE_KINDS, STATUSES, ConeProgram, Solution
from cvxlpgd.solvers.base import ALL_CONES, CANON_SOLVERS, DiffcpMethod, Workspace
from cvxlpgd.solvers.builtin import SOLVERS

_PROTOCOL = "cvxlpgd.ConeSolver (see its docstring)"


class CustomSolver:
    """Wraps a user's backend, or a built-in backend's own instance (which alone may carry a
    built-in's name and its ``diffcp`` capability)."""

    diffcp: DiffcpMethod | None

    def __init__(self, backend: object):
        what = type(backend).__name__
        if isinstance(backend, type):
            cls = backend.__name__
            raise TypeError(f"solver= got the class {cls}; pass an instance, {cls}(...).")
        name = getattr(backend, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"A solver object needs a non-empty string attribute 'name' ({_PROTOCOL}); "
                f"{what} has {name!r}."
            )
        builtin = isinstance(backend, tuple(SOLVERS.values()))
        if not builtin and name.upper() in SOLVERS:
            raise ValueError(
                f"The solver object {what} is named {name!r}, a built-in solver's name; give it a "
                f"name of its own (e.g. 'my-{name.lower()}'), so that messages and gradient methods "
                "cannot mistake it for the built-in."
            )
        solve = getattr(backend, "solve", None)
        if not callable(solve):
            raise TypeError(f"The solver object {name!r} has no method solve(program, warm_start, workspace)")
        self._takes_eps = _check_signature(name, solve)
        self.backend = backend
        # gradient="implicit" runs a built-in's own solver through diffcp; no user object can.
        self.diffcp = backend.diffcp if builtin else None
        self.name = name
        self.canon_solver = _attribute(backend, "canon_solver", "CLARABEL", str)
        if self.canon_solver not in CANON_SOLVERS:
            raise ValueError(
                f"Solver {name!r}: canon_solver must be one of {sorted(CANON_SOLVERS)}, "
                f"got {self.canon_solver!r}."
            )
        self.mixed_integer = _attribute(backend, "mixed_integer", False, bool)
        self.reuses_workspace = _attribute(backend, "reuses_workspace", False, bool)
        self.cones = frozenset(_attribute(backend, "cones", ALL_CONES, (set, frozenset, list, tuple)))
        unknown = self.cones - ALL_CONES
        if unknown:
            raise ValueError(
                f"Solver {name!r}: unknown cone kinds {sorted(unknown)} in cones; the kinds are "
                f"{list(CONE_KINDS)}."
            )
        self.settings = dict(_attribute(backend, "settings", {}, Mapping))
        self.eps = _tolerance(backend, "eps")
        self.tightest_eps = _tolerance(backend, "tightest_eps")
        self.solves_many = _attribute(backend, "solves_many", False, bool)
        if self.solves_many and not callable(getattr(backend, "solve_many", None)):
            raise TypeError(f"The solver object {name!r} declares solves_many but has no method solve_many.")

    def configured(self, solver_args: Mapping[str, Any]) -> CustomSolver:
        """This backend, or the one its ``with_settings(solver_args)`` returns for non-empty args,
        checked as this one was (it may not take a built-in's name either)."""
        if not solver_args:
            return self
        with_settings = getattr(self.backend, "with_settings", None)
        if not callable(with_settings):
            raise ValueError(
                f"solver_args {sorted(solver_args)} were given, but the solver object {self.name!r} has no "
                "with_settings(args) method to take them: configure the object itself and pass no "
                "solver_args, or give it a with_settings method that returns a configured backend."
            )
        return CustomSolver(with_settings(dict(solver_args)))

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
        eps: float | None = None,
    ) -> Solution:
        extra = {"eps": eps} if self._takes_eps and eps is not None else {}
        solution = self.backend.solve(program, warm_start=warm_start, workspace=workspace, **extra)
        self._check(program, solution)
        return solution

    def solve_many(
        self,
        programs: list[ConeProgram],
        warm_starts: list[Solution | None],
        workspace: Workspace | None = None,
        eps: list[float | None] | None = None,
    ) -> list[Solution]:
        solutions = list(self.backend.solve_many(programs, warm_starts, workspace=workspace, eps=eps))
        if len(solutions) != len(programs):
            raise ValueError(
                f"Solver {self.name!r} returned {len(solutions)} solutions from solve_many for "
                f"{len(programs)} programs."
            )
        for program, solution in zip(programs, solutions, strict=True):
            self._check(program, solution)
        return solutions

    def _check(self, program: ConeProgram, solution: object) -> None:
        if not isinstance(solution, Solution):
            raise TypeError(
                f"Solver {self.name!r} returned {type(solution).__name__} from solve; it must return a "
                "cvxlpgd.Solution (failures as a status, e.g. cvxlpgd.INFEASIBLE)."
            )
        if solution.status not in STATUSES:
            raise ValueError(
                f"Solver {self.name!r} returned status {solution.status!r}; the statuses are "
                f"{sorted(STATUSES)} (its own status text goes in solver_status)."
            )
        if not solution.usable:
            return
        m, n = program.A.shape
        for field, size in (("x", n), ("y", m), ("s", m)):
            value = np.asarray(getattr(solution, field))
            if value.shape != (size,):
                raise ValueError(
                    f"Solver {self.name!r} returned {field} of shape {value.shape} for a program with "
                    f"{n} variables and {m} constraint rows; expected ({size},)."
                )
            if not np.isfinite(value).all():
                raise ValueError(
                    f"Solver {self.name!r} returned non-finite entries in {field} with status "
                    f"{solution.status!r}; a usable solution must be finite (else report a failure status)."
                )


def _attribute(backend: object, key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
    value = getattr(backend, key, default)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(
            f"Solver {backend.name!r}: attribute {key!r} must be of type "  # type: ignore[attr-defined]
            f"{getattr(kind, '__name__', kind)}, got {value!r}."
        )
    return value


def _tolerance(backend: object, key: str) -> float:
    """A declared accuracy as a float >= 0 (0.0, exact, when not declared)."""
    value = _attribute(backend, key, 0.0, (int, float))
    if not (math.isfinite(value) and value >= 0):
        name = backend.name  # type: ignore[attr-defined]
        raise ValueError(f"Solver {name!r}: {key} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _check_signature(name: str, solve: Any) -> bool:
    """The pipeline calls ``solve(program, warm_start=..., workspace=...)``, and adds ``eps=``
    where the method takes it: returns whether it does."""
    try:
        signature = inspect.signature(solve)
    except (TypeError, ValueError):  # a builtin without a signature: trust it, without eps
        return False
    try:
        signature.bind(None, warm_start=None, workspace=None)
    except TypeError as error:
        raise TypeError(
            f"The solve method of solver {name!r} must accept solve(program, warm_start=None, "
            f"workspace=None) ({error})."
        ) from None
    try:
        signature.bind(None, warm_start=None, workspace=None, eps=None)
    except TypeError:
        return False
    return True
