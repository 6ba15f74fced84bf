"""cvxlpgd: CVXPY problems as PyTorch layers with LPGD gradients that train on LPs too.

The names below load on first use: a worker process of a process pool or a cluster imports only
the per-chunk modules it runs (numpy, scipy, the solvers, diffcp), not torch and CVXPY, which
would multiply its start-up time (measured in docs/design.md, "Chunks and executors").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvxlpgd.errors import PerturbedSolveError, SolverError, SolverWarning
    from cvxlpgd.gradients import Implicit
    from cvxlpgd.gradients.lpgd import LPGD
    from cvxlpgd.layer import CvxpyLayer

__version__ = "0.1.0"

_HOMES = {
    "CvxpyLayer": "cvxlpgd.layer",
    "Implicit": "cvxlpgd.gradients",
    "LPGD": "cvxlpgd.gradients.lpgd",
    "PerturbedSolveError": "cvxlpgd.errors",
    "SolverError": "cvxlpgd.errors",
    "SolverWarning": "cvxlpgd.errors",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cvxlpgd' has no attribute {name!r}")


__all__ = [
    "CvxpyLayer",
    "Implicit",
    "LPGD",
    "PerturbedSolveError",
    "SolverError",
    "SolverWarning",
    "__version__",
]
