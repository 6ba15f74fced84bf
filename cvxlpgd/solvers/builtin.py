"""The built-in backends, by the canonical name that ``solver=`` and messages use."""

from __future__ import annotations

from cvxlpgd.solvers.clarabel import ClarabelSolver
from cvxlpgd.solvers.highs import HighsSolver
from cvxlpgd.solvers.optional import optional_solvers
from cvxlpgd.solvers.scs import ScsSolver

SOLVERS: dict[str, type] = {
    **{backend.name: backend for backend in (ScsSolver, ClarabelSolver, HighsSolver)},
    **optional_solvers(),
}
