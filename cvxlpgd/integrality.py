"""What compiling adds for mixed-integer problems (integer columns) and for solvers that accept
only some cones (the check).

A continuous problem is canonicalized as the solver's ``canon_solver`` asks (HiGHS: as for
Clarabel, so variable bounds stay rows of ``A`` and the conic program and its duals are the same
for every solver). A mixed-integer problem can only be canonicalized for a MIP-capable solver
(HiGHS's conventions, whatever the backend): CVXPY then moves variable attributes (``nonneg``,
``bounds``, ``boolean``) out of ``A`` into column bounds, which the program must carry.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from cvxlpgd.cone import ConeDims, Integrality
from cvxlpgd.program import ConicForm
from cvxlpgd.solvers.base import check_cones

# The CVXPY solver whose canonicalization mixed-integer problems take (column bounds out of A),
# and the built-in backend that solves them.
MIP_SOLVER = "HIGHS"


def is_mixed_integer(problem: cp.Problem) -> bool:
    return any(v.attributes.get("boolean") or v.attributes.get("integer") for v in problem.variables())


def canonicalization_solver(problem: cp.Problem, form: ConicForm) -> str:
    """The CVXPY solver whose canonicalization ``compile_problem`` uses for ``form``."""
    return MIP_SOLVER if is_mixed_integer(problem) else form.canon_solver


def problem_data(
    problem: cp.Problem, form: ConicForm, solver_opts: dict, canon_backend: str | None = None
) -> tuple[dict, object]:
    """``problem.get_problem_data`` for ``form``, with CVXPY's refusal of a non-linear MIP turned
    into an error that names what is missing, and the cones checked against the solver's."""
    mixed_integer = is_mixed_integer(problem)
    try:
        data, chain, _ = problem.get_problem_data(
            solver=canonicalization_solver(problem, form),
            solver_opts=solver_opts,
            canon_backend=canon_backend,
        )
    except cp.error.SolverError as error:
        if not mixed_integer:
            raise
        raise ValueError(
            f"{form.solver or MIP_SOLVER} solves mixed-integer problems only when they are linear, and "
            f"CVXPY cannot reduce this one to a mixed-integer LP ({error}). Continuous problems with "
            "other cones can use solver='SCS' or solver='CLARABEL'."
        ) from error
    if form.cones is not None:
        check_cones(form.solver, form.cones, ConeDims.from_cvxpy(data["dims"]))
    return data, chain


def integrality(data: dict, n: int) -> Integrality | None:
    """Integer columns and column bounds from CVXPY's data for a MIP-capable solver; None if none."""
    integer = np.asarray(data.get("int_vars_idx", []), dtype=np.int64)
    boolean = np.asarray(data.get("bool_vars_idx", []), dtype=np.int64)
    if integer.size + boolean.size == 0:
        return None
    lower = data.get("lower_bounds")
    upper = data.get("upper_bounds")
    lower = np.full(n, -np.inf) if lower is None else np.asarray(lower, dtype=float).copy()
    upper = np.full(n, np.inf) if upper is None else np.asarray(upper, dtype=float).copy()
    lower[boolean] = np.maximum(lower[boolean], 0.0)
    upper[boolean] = np.minimum(upper[boolean], 1.0)
    return Integrality(integer=np.union1d(integer, boolean), lower=lower, upper=upper)


def check_mixed_integer_data(constant_constraints: bool, quadratic: bool) -> None:
    """A mixed-integer problem may be parametrized in its linear costs only: LPGD's gradient
    for ``A`` and ``b`` needs constraint duals, which a mixed-integer problem does not have."""
    if quadratic:
        raise ValueError(
            "HIGHS cannot solve a mixed-integer problem with a quadratic objective; "
            "write the objective as linear (or use an epigraph of linear pieces)."
        )
    if not constant_constraints:
        raise ValueError(
            "A parameter of this mixed-integer problem reaches its constraints (directly, or through "
            "a nonlinear objective term that CVXPY rewrites as constraints); constraint duals are not "
            "defined for mixed-integer problems, so parameters may enter only the linear objective."
        )
