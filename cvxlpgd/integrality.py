"""Mixed-integer problems: the rules they follow (checked on the problem, and on its compiled
data for what only canonicalization reveals), the integer columns compiling adds, and the cone
check every compiled problem goes through.

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
from cvxlpgd.solvers.base import ConeSolver, check_cones

# The CVXPY solver whose canonicalization mixed-integer problems take (column bounds out of A),
# and the built-in backend that solves them.
MIP_SOLVER = "HIGHS"


# Why a mixed-integer problem may be parametrized in its linear costs only: LPGD's gradient for
# A and b needs constraint duals, which such a problem does not have.
_COSTS_ONLY = (
    "constraint duals are not defined for mixed-integer problems, so parameters may enter only the "
    "linear objective."
)


def _is_integral(variable: cp.Variable) -> bool:
    return bool(variable.attributes.get("boolean") or variable.attributes.get("integer"))


def is_mixed_integer(problem: cp.Problem) -> bool:
    return any(_is_integral(v) for v in problem.variables())


def check_mixed_integer_problem(
    problem: cp.Problem, variables: list[cp.Variable], backend: ConeSolver
) -> None:
    """A mixed-integer layer needs a solver that takes integrality, primal outputs, and parameters
    in the objective only (what compiling reveals beyond that: ``check_mixed_integer_data``)."""
    if not backend.mixed_integer:
        names = sorted(v.name() for v in problem.variables() if _is_integral(v))
        raise ValueError(
            f"The problem has integer or boolean variables ({', '.join(names)}); {backend.name} solves "
            f"convex problems only. Use solver='{MIP_SOLVER}' for mixed-integer linear programs, "
            "solver='GUROBI' where gurobipy is installed, or a solver object with mixed_integer = True."
        )
    duals = {dv.id: con for con in problem.constraints for dv in con.dual_variables}
    for i, v in enumerate(variables):
        if v.id in duals:
            raise ValueError(
                f"variables[{i}] is the dual variable of constraint {duals[v.id]}; constraint duals "
                "are not defined for mixed-integer problems. Output primal variables only."
            )
    for i, con in enumerate(problem.constraints):
        if con.parameters():
            params = sorted(p.name() for p in con.parameters())
            raise ValueError(
                f"Constraint {i} ({con}) of this mixed-integer problem depends on parameters {params}; "
                + _COSTS_ONLY
            )
    for v in problem.variables():
        bounds = v.attributes.get("bounds") or ()
        if any(isinstance(bound, cp.Expression) and bound.parameters() for bound in bounds):
            raise ValueError(
                f"The bounds of variable {v.name()!r} of this mixed-integer problem depend on "
                "parameters; " + _COSTS_ONLY
            )


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
    """The rules of ``check_mixed_integer_problem`` that only the compiled data show: a quadratic
    objective, and parameters that reach the constraints through CVXPY's rewriting."""
    if quadratic:
        raise ValueError(
            "HIGHS cannot solve a mixed-integer problem with a quadratic objective; "
            "write the objective as linear (or use an epigraph of linear pieces)."
        )
    if not constant_constraints:
        raise ValueError(
            "A parameter of this mixed-integer problem reaches its constraints (directly, or through "
            "a nonlinear objective term that CVXPY rewrites as constraints); " + _COSTS_ONLY
        )
