"""cvxlpgd: CVXPY problems as PyTorch layers with LPGD gradients that train on LPs too.

Besides the layer and its gradient methods, the solver protocol is public: ``ConeSolver`` (what a
backend implements), ``ConeProgram`` (what it receives), ``Solution`` and the status constants
(what it returns), so that ``CvxpyLayer(solver=...)`` can take a user's own oracle.

The names load on first use: a worker process of a process pool or a cluster imports only the
per-chunk modules it runs (numpy, scipy, the solvers, diffcp), not torch and CVXPY, which would
multiply its start-up time (measured in docs/design.md, "Chunks and executors").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvxlpgd.cone import (
        CONE_KINDS,
        INFEASIBLE,
        INTERRUPTED,
        ITERATION_LIMIT,
        OPTIMAL,
        OPTIMAL_INACCURATE,
        SOLVER_ERROR,
        STATUSES,
        UNBOUNDED,
        ConeDims,
        ConeProgram,
        Integrality,
        Solution,
    )
    from cvxlpgd.errors import (
        ParameterWarning,
        PerturbedSolveError,
        PickleWarning,
        SharedCoresWarning,
        SolverError,
        SolverWarning,
    )
    from cvxlpgd.gradients import AdaptiveLPGD, Implicit
    from cvxlpgd.gradients.lpgd import LPGD
    from cvxlpgd.layer import CvxpyLayer
    from cvxlpgd.solvers import ConeSolver, make_solver

__version__ = "0.1.0"

_HOMES = {
    **dict.fromkeys(
        [
            "CONE_KINDS",
            "INFEASIBLE",
            "INTERRUPTED",
            "ITERATION_LIMIT",
            "OPTIMAL",
            "OPTIMAL_INACCURATE",
            "SOLVER_ERROR",
            "STATUSES",
            "UNBOUNDED",
            "ConeDims",
            "ConeProgram",
            "Integrality",
            "Solution",
        ],
        "cvxlpgd.cone",
    ),
    **dict.fromkeys(
        [
            "ParameterWarning",
            "PerturbedSolveError",
            "PickleWarning",
            "SharedCoresWarning",
            "SolverError",
            "SolverWarning",
        ],
        "cvxlpgd.errors",
    ),
    **dict.fromkeys(["AdaptiveLPGD", "Implicit"], "cvxlpgd.gradients"),
    "LPGD": "cvxlpgd.gradients.lpgd",
    "CvxpyLayer": "cvxlpgd.layer",
    **dict.fromkeys(["ConeSolver", "make_solver"], "cvxlpgd.solvers"),
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cvxlpgd' has no attribute {name!r}")


__all__ = [
    "AdaptiveLPGD",
    "CONE_KINDS",
    "ConeDims",
    "ConeProgram",
    "ConeSolver",
    "CvxpyLayer",
    "INFEASIBLE",
    "INTERRUPTED",
    "ITERATION_LIMIT",
    "Implicit",
    "Integrality",
    "LPGD",
    "OPTIMAL",
    "OPTIMAL_INACCURATE",
    "ParameterWarning",
    "PerturbedSolveError",
    "PickleWarning",
    "SOLVER_ERROR",
    "STATUSES",
    "SharedCoresWarning",
    "Solution",
    "SolverError",
    "SolverWarning",
    "UNBOUNDED",
    "make_solver",
    "__version__",
]
