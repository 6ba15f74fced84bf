"""Solver backends behind one protocol (solvers/base.py); ``make_solver`` makes one for a layer.

``solver=`` is a built-in's name (``"SCS"``, ``"CLARABEL"``, ``"HIGHS"``, any case, or
``cp.SCS`` ...) or an object implementing ``ConeSolver``, which the layer uses as is, or
configured by its ``with_settings(solver_args)`` when ``solver_args`` are given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cvxlpgd.solvers.base import ConeSolver
from cvxlpgd.solvers.clarabel import ClarabelSolver
from cvxlpgd.solvers.custom import CustomSolver
from cvxlpgd.solvers.highs import HighsSolver
from cvxlpgd.solvers.optional import check_installed, optional_solvers
from cvxlpgd.solvers.scs import ScsSolver

SOLVERS = {"SCS": ScsSolver, "CLARABEL": ClarabelSolver, "HIGHS": HighsSolver, **optional_solvers()}
SolverSpec = str | ConeSolver


def solver_name(solver: object) -> str:
    """Canonical name for ``"scs"``, ``cp.SCS``, ``"Clarabel"``, ..., or a backend object's name."""
    if not isinstance(solver, str) and (hasattr(solver, "solve") or hasattr(solver, "name")):
        return _backend(solver).name
    name = str(solver).upper() if isinstance(solver, str) else None
    if name not in SOLVERS:
        check_installed(solver)
        raise ValueError(
            f"Unknown solver {solver!r}; cvxlpgd supports {sorted(SOLVERS)}, or an object implementing "
            "cvxlpgd.ConeSolver (a name and a solve method)."
        )
    return name


def resolve_solver(solver: object) -> SolverSpec:
    """What a layer keeps as its solver: a built-in's canonical name, or the (checked) object."""
    if isinstance(solver, str) or not (hasattr(solver, "solve") or hasattr(solver, "name")):
        return solver_name(solver)
    _backend(solver)
    return solver  # type: ignore[return-value]


def make_solver(solver: SolverSpec, solver_args: Mapping[str, Any] | None) -> ConeSolver:
    """The backend for one call: a built-in configured by ``solver_args``, or a user's object."""
    if isinstance(solver, str):
        return SOLVERS[solver_name(solver)](solver_args or {})
    return _backend(solver).configured(solver_args or {})


def _backend(solver: object) -> CustomSolver:
    """A backend object, checked; a built-in backend's own instance keeps its name."""
    own = isinstance(solver, tuple(SOLVERS.values()))
    return CustomSolver(solver, reserved=frozenset() if own else frozenset(SOLVERS))


__all__ = ["ConeSolver", "SOLVERS", "SolverSpec", "make_solver", "resolve_solver", "solver_name"]
