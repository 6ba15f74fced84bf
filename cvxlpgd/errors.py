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
    """A call went on despite solver trouble (failed, inaccurate or one-sided items).

    The text names only counts, never item numbers, so that Python's once-per-place filter
    shows a training loop's warning once; which items and why are in ``statuses`` (and in the
    layer's ``last_statuses``).

    Attributes:
        statuses (dict): each item concerned, by batch index (for LPGD re-solves an (index, sign)
            pair), and its status or what happened to it.
    """

    def __init__(self, message: str, statuses: Mapping[object, str]):
        super().__init__(message)
        self.statuses = dict(statuses)


def warn_user(message: str, statuses: Mapping[object, str]) -> None:
    """Warn with a ``SolverWarning``, attributed to the user's line (see ``warn_at_caller``)."""
    warn_at_caller(SolverWarning(message, statuses))


def warn_at_caller(warning: Warning) -> None:
    """Warn, attributed to the first caller outside cvxlpgd and torch, so that the reported file
    and line are the user's (the stack depth through torch varies)."""
    # torch's directory is read from the loaded module: worker processes never import torch.
    internal = tuple(_package_dir(m.__file__) for m in (sys.modules[__name__], sys.modules.get("torch")) if m)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level + 1)
