"""The ``solver_args`` keys that cvxpylayers users pass, translated to cvxlpgd's own arguments.

cvxpylayers sends ``solver_args`` to diffcp, which reads a few keys itself: ``solve_method``
(the solver), ``mode`` with ``derivative_kwargs`` (the derivative), ``n_jobs_forward`` and
``n_jobs_backward`` (parallel workers). Here each keeps that meaning; every other key is a
solver setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cvxlpgd.gradients import GradientMethod, Implicit
from cvxlpgd.gradients.lpgd import LPGD

# diffcp's LPGD modes: "right" perturbs by +tau (cvxlpgd's lower side), "left" by -tau (upper).
_LPGD_SIDES = {"lpgd": "central", "lpgd_right": "lower", "lpgd_left": "upper"}
_IMPLICIT_MODES = ("dense", "lsqr", "lsmr")
_UNSUPPORTED_SOLVERS = ("ECOS",)


@dataclass(frozen=True)
class PeerOptions:
    """What a ``solver_args`` mapping asks for beyond solver settings (None: not asked)."""

    solver: str | None = None
    gradient: GradientMethod | None = None
    forward_workers: int | None = None
    backward_workers: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def split_peer_args(solver_args: Mapping[str, Any] | None) -> PeerOptions:
    """Take the cvxpylayers keys out of ``solver_args``; the rest are solver settings."""
    args = dict(solver_args or {})
    solver = args.pop("solve_method", None)
    if isinstance(solver, str) and solver.upper() in _UNSUPPORTED_SOLVERS:
        raise ValueError(
            f"solver_args['solve_method'] = {solver!r} is not available in cvxlpgd; use 'SCS', "
            "'CLARABEL' or 'HIGHS'."
        )
    mode = args.pop("mode", None)
    derivative = dict(args.pop("derivative_kwargs", None) or {})
    return PeerOptions(
        solver=solver,
        gradient=None if mode is None else _gradient(mode, derivative),
        forward_workers=_workers("n_jobs_forward", args.pop("n_jobs_forward", None)),
        backward_workers=_workers("n_jobs_backward", args.pop("n_jobs_backward", None)),
        settings=args,
    )


def _gradient(mode: object, derivative: dict[str, Any]) -> GradientMethod:
    if mode in _IMPLICIT_MODES:
        if derivative:
            raise ValueError(
                f"solver_args['derivative_kwargs'] applies to the LPGD modes, not mode={mode!r}."
            )
        return Implicit(mode=mode)
    if mode in _LPGD_SIDES:
        unknown = set(derivative) - {"tau", "rho"}
        if unknown:
            raise ValueError(
                f"solver_args['derivative_kwargs'] takes 'tau' and 'rho', got {sorted(unknown)}."
            )
        return LPGD(side=_LPGD_SIDES[mode], **derivative)
    modes = [*_IMPLICIT_MODES, *_LPGD_SIDES]
    raise ValueError(f"solver_args['mode'] must be one of {modes}, got {mode!r}.")


def _workers(key: str, value: object) -> int | None:
    """diffcp's convention: a positive count, or -1 for one worker per core."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not (value >= 1 or value == -1):
        raise ValueError(f"solver_args[{key!r}] must be a positive number of workers or -1, got {value!r}.")
    return value
