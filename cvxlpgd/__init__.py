"""cvxlpgd: CVXPY problems as PyTorch layers with LPGD gradients that train on LPs too."""

from cvxlpgd.errors import PerturbedSolveError, SolverError, SolverWarning
from cvxlpgd.gradients import AdaptiveLPGD, Implicit
from cvxlpgd.gradients.lpgd import LPGD
from cvxlpgd.layer import CvxpyLayer

__version__ = "0.1.0"

__all__ = [
    "AdaptiveLPGD",
    "CvxpyLayer",
    "Implicit",
    "LPGD",
    "PerturbedSolveError",
    "SolverError",
    "SolverWarning",
    "__version__",
]
