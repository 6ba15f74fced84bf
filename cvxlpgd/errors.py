"""Exceptions and warnings raised by cvxlpgd.

Input errors subclass ``ValueError`` (or ``TypeError``) so that existing ``except ValueError``
code written for cvxpylayers keeps working; solver failures subclass ``RuntimeError`` and carry
the failing batch items with their statuses.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping

import diffcp


def _package_dir(file: str) -> str:
    return os.path.dirname(os.path.abspath(file)) + os.sep


class SolverError(RuntimeError, diffcp.SolverError):
    """One or more batch items could not be solved.

    Also a ``diffcp.SolverError``, so ``except diffcp.SolverError`` code written for
    cvxpylayers works.

    Attributes:
        statuses (dict[int, str]): each failed batch item and the status it ended with.
    """

    def __init__(self, message: str, statuses: Mapping[int, str]):
        super().__init__(message)
        self.statuses = dict(statuses)


class PerturbedSolveError(SolverError):
    """An LPGD re-solve failed: the perturbed problem is infeasible or unbounded.

    Carries the side and the ``tau`` that was used, so that the remedy can be chosen.

    Attributes:
        statuses (dict[int, str]): each failed batch item and the status of its re-solve.
        side (str): ``"lower"`` for the ``+tau`` solve, ``"upper"`` for ``-tau``.
        tau (float): the step of the failed re-solve.
    """

    def __init__(self, message: str, statuses: Mapping[int, str], side: str, tau: float):
        super().__init__(message, statuses)
        self.side = side
        self.tau = tau


class SolverWarning(UserWarning):
    """A call went on despite trouble (failed, inaccurate or one-sided items; the subclasses
    below name other kinds). Every warning cvxlpgd issues is one, so one filter silences them.

    The text names only counts, never item numbers, so that Python's once-per-place filter
    shows a training loop's warning once; which items and why are in ``statuses`` (and in the
    layer's ``last_statuses``).

    Attributes:
        statuses (dict): each item concerned, by batch index (for LPGD re-solves an (index, sign)
            pair), and its status or what happened to it.
    """

    def __init__(self, message: str, statuses: Mapping[object, str] | None = None):
        super().__init__(message)
        self.statuses = dict(statuses or {})


class ParameterWarning(SolverWarning):
    """A parameter's value breaks its declared attribute in a way the solve tolerates (an exact
    zero for ``pos``, a slightly non-symmetric ``PSD``): the call goes on as the message says.
    ``statuses`` maps the parameter's name to what is wrong with its value."""


class PickleWarning(SolverWarning):
    """A layer was pickled without its executor, which does not pickle (a thread or process
    pool): the loaded layer runs on cvxlpgd's default thread pool until given one again."""


class SharedCoresWarning(SolverWarning, RuntimeWarning):
    """Several torch.distributed ranks on one machine each start the default pool of one thread
    per core (see ranks.py); also a ``RuntimeWarning``, as it was first."""


def warn_user(message: str, statuses: Mapping[object, str]) -> None:
    """Warn with a ``SolverWarning``, attributed to the user's line (see ``warn_at_caller``)."""
    warn_at_caller(SolverWarning(message, statuses))


# The packages whose frames lie between a user's call and cvxlpgd: the front ends' frameworks.
_FRAMEWORKS = ("torch", "jax", "jaxlib")


def warn_at_caller(warning: Warning) -> None:
    """Warn, attributed to the first caller outside cvxlpgd and the frameworks (torch, JAX), so
    that the reported file and line are the user's (the stack depth through them varies)."""
    # Read from the loaded modules: worker processes import neither torch nor JAX.
    packages = [sys.modules[__name__], *(sys.modules.get(name) for name in _FRAMEWORKS)]
    internal = tuple(_package_dir(m.__file__) for m in packages if m is not None)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level + 1)
