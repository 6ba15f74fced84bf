"""Solver backends behind one protocol; ``make_solver`` picks one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cvxlpgd.solvers.base import ConeSolver
from cvxlpgd.solvers.clarabel import ClarabelSolver
from cvxlpgd.solvers.highs import HighsSolver
from cvxlpgd.solvers.scs import ScsSolver

SOLVERS = {"SCS": ScsSolver, "CLARABEL": ClarabelSolver, "HIGHS": HighsSolver}


def solver_name(solver: object) -> str:
    """Canonical name for ``"scs"``, ``cp.SCS``, ``"Clarabel"``, ...; raises if unknown."""
    name = str(solver).upper() if isinstance(solver, str) else None
    if name not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; cvxlpgd supports {sorted(SOLVERS)}.")
    return name


def make_solver(name: str, solver_args: Mapping[str, Any] | None) -> ConeSolver:
    return SOLVERS[solver_name(name)](solver_args or {})


__all__ = ["ConeSolver", "SOLVERS", "make_solver", "solver_name"]
