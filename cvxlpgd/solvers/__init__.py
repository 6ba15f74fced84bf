"""Solver backends behind one protocol (solvers/base.py).

``solver=`` is a built-in's name (``"SCS"``, ``"CLARABEL"``, ``"HIGHS"``, any case, or
``cp.SCS`` ...) or an object implementing ``ConeSolver``. ``lookup_solver`` checks it once, when
the layer is built, and configures it with the layer's ``solver_args``; a call's own
``solver_args`` configure another backend from the same checked choice (a user's object through
its ``with_settings(solver_args)``). ``make_solver`` does both at once, for one-off use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cvxlpgd.solvers.base import ConeSolver, DiffcpMethod
from cvxlpgd.solvers.builtin import SOLVERS
from cvxlpgd.solvers.custom import CustomSolver
from cvxlpgd.solvers.optional import check_installed


@dataclass(frozen=True)
class LayerSolver:
    """A layer's solver, looked up and checked once: ``backend`` is configured with the layer's
    ``settings``; ``for_call`` gives the backend for one call's own settings (the same object
    when it has none, so a user's object is neither re-wrapped nor re-checked per call)."""

    spec: str | object  # a built-in's canonical name, or the user's object as given
    name: str
    settings: Mapping[str, Any]
    backend: ConeSolver
    configure: Callable[[Mapping[str, Any]], ConeSolver]

    def for_call(self, call_settings: Mapping[str, Any] | None) -> ConeSolver:
        if not call_settings:
            return self.backend
        return self.configure({**self.settings, **call_settings})


SolverSpec = str | ConeSolver | LayerSolver


def canonical_name(solver: object) -> str:
    """A built-in's canonical name for ``"scs"``, ``cp.SCS``, ``"Clarabel"``, ..."""
    name = solver.upper() if isinstance(solver, str) else None
    if name not in SOLVERS:
        check_installed(solver)
        raise ValueError(
            f"Unknown solver {solver!r}; cvxlpgd supports {sorted(SOLVERS)}, or an object implementing "
            "cvxlpgd.ConeSolver (a name and a solve method)."
        )
    return name


def lookup_solver(solver: object, solver_args: Mapping[str, Any] | None = None) -> LayerSolver:
    """Check ``solver=`` once and configure it with ``solver_args``: a built-in by name, or a
    user's object (its protocol checked, its ``with_settings`` called when there are settings)."""
    settings = dict(solver_args or {})
    if isinstance(solver, str) or not (hasattr(solver, "solve") or hasattr(solver, "name")):
        name = canonical_name(solver)
        backend_class = SOLVERS[name]
        return LayerSolver(name, name, settings, backend_class(settings), backend_class)
    checked = CustomSolver(solver)
    return LayerSolver(solver, checked.name, settings, checked.configured(settings), checked.configured)


def make_solver(solver: SolverSpec, solver_args: Mapping[str, Any] | None) -> ConeSolver:
    """The backend for ``solver`` (a name, an object, or a layer's ``LayerSolver``) configured by
    ``solver_args``."""
    if isinstance(solver, LayerSolver):
        return solver.for_call(solver_args)
    return lookup_solver(solver, solver_args).backend


__all__ = [
    "SOLVERS",
    "ConeSolver",
    "DiffcpMethod",
    "LayerSolver",
    "SolverSpec",
    "canonical_name",
    "lookup_solver",
    "make_solver",
]
