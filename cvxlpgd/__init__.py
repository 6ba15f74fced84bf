"""cvxlpgd: CVXPY problems as PyTorch layers with LPGD gradients that train on LPs too.

Besides the layer and its gradient methods, the solver protocol is public: ``ConeSolver`` (what a
backend implements), ``ConeProgram`` (what it receives), ``Solution`` and the status constants
(what it returns), so that ``CvxpyLayer(solver=...)`` can take a user's own oracle.
"""

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
from cvxlpgd.errors import PerturbedSolveError, SolverError, SolverWarning
from cvxlpgd.gradients import AdaptiveLPGD, Implicit
from cvxlpgd.gradients.lpgd import LPGD
from cvxlpgd.layer import CvxpyLayer
from cvxlpgd.solvers import ConeSolver, make_solver

__version__ = "0.1.0"

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
    "PerturbedSolveError",
    "SOLVER_ERROR",
    "STATUSES",
    "Solution",
    "SolverError",
    "SolverWarning",
    "UNBOUNDED",
    "__version__",
    "make_solver",
]
