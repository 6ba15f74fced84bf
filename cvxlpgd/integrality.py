"""What compiling for HiGHS adds to the conic form: integer columns, and the checks on cones.

A continuous problem is canonicalized as for Clarabel (variable bounds stay rows of ``A``, so the
conic program and its duals are the same for every solver). A mixed-integer problem can only be
canonicalized for a MIP-capable solver: CVXPY then moves variable attributes (``nonneg``,
``bounds``, ``boolean``) out of ``A`` into column bounds, which the program must carry.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from cvxlpgd.cone import ConeDims, Integrality
from cvxlpgd.solvers.highs import check_cones

MIP_SOLVER = "HIGHS"


def is_mixed_integer(problem: cp.Problem) -> bool:
    return any(v.attributes.get("boolean") or v.attributes.get("integer") for v in problem.variables())


def canonicalization_solver(problem: cp.Problem, solver: str) -> str:
    """The CVXPY solver whose canonicalization ``compile_problem`` uses for ``solver``."""
    if solver == MIP_SOLVER and not is_mixed_integer(problem):
        return "CLARABEL"
    return solver


def problem_data(
    problem: cp.Problem, solver: str, solver_opts: dict, canon_backend: str | None = None
) -> tuple[dict, object]:
    """``problem.get_problem_data`` for ``solver``, with CVXPY's refusal of a non-linear MIP
    turned into an error that names what HIGHS lacks."""
    try:
        data, chain, _ = problem.get_problem_data(
            solver=canonicalization_solver(problem, solver),
            solver_opts=solver_opts,
            canon_backend=canon_backend,
        )
    except cp.error.SolverError as error:
        if solver != MIP_SOLVER:
            raise
        raise ValueError(
            "HIGHS solves linear and mixed-integer linear programs only, and CVXPY cannot reduce this "
            f"mixed-integer problem to one ({error}). Continuous problems with other cones can use "
            "solver='SCS' or solver='CLARABEL'."
        ) from error
    if solver == MIP_SOLVER:
        check_cones(ConeDims.from_cvxpy(data["dims"]))
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
