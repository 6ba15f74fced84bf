"""The solver protocol every backend implements (public: a user may plug in their own), and the
settings checks the built-in backends share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cvxlpgd.cone import CONE_KINDS, ConeDims, ConeProgram, Solution

Workspace = dict
ALL_CONES = frozenset(CONE_KINDS)
# The CVXPY canonicalizations a backend may ask for. They differ only in how PSD cones are
# vectorized (SCS: lower triangle; Clarabel: upper triangle, both scaled by sqrt 2 off the diagonal).
CANON_SOLVERS = frozenset({"SCS", "CLARABEL"})


@dataclass(frozen=True)
class DiffcpMethod:
    """How diffcp runs a built-in backend's solver for ``gradient="implicit"`` (diffcp solves and
    differentiates in one call): its ``solve_method`` name, whether it takes a warm start, and
    how to read the status from the ``info`` dict diffcp returns."""

    solve_method: str
    warm_starts: bool
    status: Callable[[Mapping[str, Any]], str]


class ConeSolver(Protocol):
    """A solver backend: turns a ``ConeProgram`` into a ``Solution``.

    The built-in backends (``"SCS"``, ``"CLARABEL"``, ``"HIGHS"``) implement it, and
    ``CvxpyLayer(solver=...)`` also takes any object that does: a commercial solver, or a
    combinatorial algorithm that solves the problem's LP exactly. Only LPGD can use such an
    object (it needs nothing but ``solve``); the implicit gradient runs through diffcp's own solvers.

    A user's object needs ``name`` and ``solve``; the other attributes default as shown.

    Attributes:
        name: how messages name the backend; not a built-in's name.
        canon_solver: the CVXPY solver whose canonicalization the programs follow, ``"CLARABEL"``
            (default) or ``"SCS"``; they differ only in the layout of PSD cones.
        mixed_integer: whether it solves programs with ``integrality`` (default False). Mixed-integer
            problems reach it as CVXPY canonicalizes them for HiGHS (variable bounds as column bounds).
        cones: the kinds of cone it accepts, a subset of ``cvxlpgd.CONE_KINDS`` (default: all); a
            problem that needs others is refused when the layer is built.
        reuses_workspace: whether it keeps state in ``workspace`` (default False).
        settings: its settings, for display (default empty).
        eps: the accuracy a solve without ``eps`` reaches (default 0.0: exact, as a simplex
            vertex or a combinatorial algorithm). A one-sided LPGD estimate differences against
            the forward solution; when a re-solve needs a tighter accuracy than this, the forward
            point is first re-solved to that accuracy.
        tightest_eps: the tightest accuracy it can reach (default 0.0); an LPGD perturbation that
            needs a tighter one is too small for the backend, and the gradient method warns.
        diffcp: how diffcp runs the same solver (``gradient="implicit"``), or None; set by the
            built-in SCS and Clarabel backends only (a user's object always gets None).

    ``solve(program, warm_start=None, workspace=None, eps=None)`` returns the ``Solution`` of ``program``
    (see ``Solution`` for what it must hold; a failure is a status, not an exception).
    ``warm_start`` is the forward solution of the same batch item when LPGD re-solves a perturbed
    program (same ``A``, changed ``b``, ``c`` and possibly ``P``); a backend may start from it or
    ignore it. ``workspace``, when given, is a dict that one thread owns for a sequence of programs
    with the same ``A``, ``P`` and cones: a backend may keep its model there and only update
    ``b`` and ``c``. The same object serves all threads of a batch at once, so ``solve`` must keep
    per-call state in ``workspace`` or on the stack, never on ``self`` unguarded.
    ``eps``, when given, is an accuracy the solve should reach at least (its own tolerances apply
    when tighter): LPGD's re-solves ask for a fraction of the perturbation they measure, since a
    solution off by the solver's usual tolerance would swamp a small one. A user's ``solve`` may
    leave the keyword out; it is then never passed (fine for an exact backend).

    ``solve_many(programs, warm_starts, workspace=None, eps=None)``, for a backend that declares
    ``solves_many = True`` (default False), returns the ``Solution`` of each of several programs of
    one structure (the same ``A``, ``P`` and cones; other ``b`` and ``c``), with a warm start (or
    None) and an ``eps`` (or None) per program, as ``solve`` would; the layer then hands it a
    chunk's forward solves, and LPGD's first re-solves of all its items, at once. Each result
    must not depend on the other programs of the call (the layer's results may not depend on an
    item's batch neighbours). Without it, the layer calls ``solve`` per item.

    ``solver_args`` reach a user's object through an optional ``with_settings(args)`` method that
    returns a configured backend (the object itself stays as it is); without one, the layer uses
    the object as is and refuses non-empty ``solver_args``.
    """

    name: str
    canon_solver: str
    mixed_integer: bool
    cones: frozenset[str]
    reuses_workspace: bool
    settings: Mapping[str, Any]
    eps: float
    tightest_eps: float
    diffcp: DiffcpMethod | None
    solves_many: bool

    def solve(
        self,
        program: ConeProgram,
        warm_start: Solution | None = None,
        workspace: Workspace | None = None,
        eps: float | None = None,
    ) -> Solution: ...


class SimplexBackend:
    """What the simplex backends (HiGHS, Gurobi) declare alike: LPs and mixed-integer LPs,
    canonicalized as for Clarabel (bounds stay rows of A, so the program and its duals are the
    same for every solver; mixed-integer ones as CVXPY does for HiGHS), a model kept in the
    workspace so the next program only changes costs and right-hand sides, and vertices exact up
    to their feasibility tolerances (no eps to tighten); diffcp cannot run them (no implicit
    gradient)."""

    canon_solver = "CLARABEL"
    mixed_integer = True
    cones = frozenset({"zero", "nonneg"})
    reuses_workspace = True
    eps = 0.0
    tightest_eps = 0.0
    diffcp = None
    solves_many = False


def solves_many(solver: ConeSolver) -> bool:
    """Whether ``solver`` has the batched entry ``solve_many`` (a user's object may lack the flag)."""
    return getattr(solver, "solves_many", False) is True


# The tightest tolerance the built-in conic backends ask of their solvers, whatever eps they get.
TIGHTEST_EPS = 1e-10


def kept_model(
    workspace: Workspace | None, key: str, program: ConeProgram, build: Callable[[ConeProgram], Any]
) -> Any:
    """The model ``workspace`` keeps under ``key``, changed to ``program`` (its ``update``), or a
    new one from ``build``, kept there for the next program of the same structure."""
    if workspace is not None and key in workspace:
        model = workspace[key]
        model.update(program)
        return model
    model = build(program)
    if workspace is not None:
        workspace[key] = model
    return model


def tightened(own: float, eps: float | None) -> float:
    """A backend tolerance ``own`` tightened to ``eps``, never below ``TIGHTEST_EPS``."""
    return own if eps is None else min(own, max(eps, TIGHTEST_EPS))


def check_cones(solver: str, accepted: frozenset[str], dims: ConeDims) -> None:
    """Refuse a program that needs cones the backend does not accept, naming both."""
    missing = sorted(dims.kinds - accepted, key=list(CONE_KINDS).index)
    if missing:
        takes = ", ".join(CONE_KINDS[k] for k in CONE_KINDS if k in accepted)
        needs = " and ".join(CONE_KINDS[k] for k in missing)
        raise ValueError(
            f"{solver} accepts only {takes} cones, but this problem needs {needs} cones; "
            "use solver='SCS' or solver='CLARABEL'."
        )


# Settings every backend understands under these names (each translates them to its own),
# with the type each must have.
COMMON_SETTING_TYPES: dict[str, type] = {"eps": float, "max_iters": int, "verbose": bool}


def _check_range(solver: str, key: str, value: Any) -> None:
    """Tolerances must be positive and finite, iteration limits at least 1, time limits >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if key.startswith(("eps", "tol")) and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{solver} setting {key!r} must be a finite number > 0, got {value!r}.")
    if key.startswith("max_iter") and value < 1:
        raise ValueError(f"{solver} setting {key!r} must be at least 1, got {value!r}.")
    if key.startswith("time_limit") and not value >= 0:
        raise ValueError(f"{solver} setting {key!r} must be >= 0, got {value!r}.")


def check_settings(
    solver: str,
    given: Mapping[str, Any],
    types: Mapping[str, type],
    choices: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """Validate settings against known names and their types, ranges and allowed values."""
    settings = {}
    for key, value in given.items():
        if key not in types:
            known = ", ".join(sorted(types))
            raise ValueError(f"Unknown {solver} setting {key!r}. Known settings: {known}.")
        if isinstance(value, np.generic):
            value = value.item()
        expected = types[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise TypeError(
                f"{solver} setting {key!r} must be of type {expected.__name__}, "
                f"got {type(value).__name__} ({value!r})."
            )
        _check_range(solver, key, value)
        if choices and key in choices and value not in choices[key]:
            allowed = sorted(choices[key])
            raise ValueError(f"{solver} setting {key!r} must be one of {allowed}, got {value!r}.")
        settings[key] = value
    return settings


def split_common(solver: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(validated ``eps`` / ``max_iters``, the backend's own settings) from ``solver_args``."""
    common = {k: v for k, v in given.items() if k in COMMON_SETTING_TYPES}
    own = {k: v for k, v in given.items() if k not in COMMON_SETTING_TYPES}
    return check_settings(solver, common, COMMON_SETTING_TYPES), own


def types_of(defaults: Mapping[str, Any]) -> dict[str, type]:
    """The type each setting must have, read off a backend's defaults."""
    return {key: type(value) for key, value in defaults.items()}
