"""cvxlpgd: CVXPY problems as PyTorch layers with LPGD gradients that train on LPs too."""

from cvxlpgd.errors import PerturbedSolveError, SolverError
from cvxlpgd.gradients.lpgd import LPGD, AdaptiveLPGD
from cvxlpgd.layer import CvxpyLayer

__version__ = "0.1.0"

__all__ = ["AdaptiveLPGD", "CvxpyLayer", "LPGD", "PerturbedSolveError", "SolverError", "__version__"]
