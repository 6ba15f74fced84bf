"""Checks of the problem, parameters and variables a layer is built from, naming the culprit."""

from __future__ import annotations

import cvxpy as cp
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.utilities import scopes

from cvxlpgd.integrality import check_mixed_integer_problem, is_mixed_integer
from cvxlpgd.solvers import ConeSolver


def check_problem(
    problem: object,
    parameters: object,
    variables: object,
    allow_param_quad_form: bool,
    backend: ConeSolver,
) -> tuple[list[cp.Parameter], list[cp.Variable]]:
    """Validate the constructor arguments for a solve by ``backend``; return parameters and
    variables as lists."""
    if not isinstance(problem, cp.Problem):
        raise TypeError(f"problem must be a cvxpy.Problem, got {type(problem).__name__}.")
    for name, items in (("parameters", parameters), ("variables", variables)):
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple, got {type(items).__name__}.")
    parameters, variables = list(parameters), list(variables)
    _check_disciplined(problem, allow_param_quad_form)
    _check_parameters(problem, parameters)
    _check_variables(problem, variables)
    if is_mixed_integer(problem):
        check_mixed_integer_problem(problem, variables, backend)
    return parameters, variables


def _check_disciplined(problem: cp.Problem, allow_param_quad_form: bool) -> None:
    """Parameters, real leaves, DCP, and DPP (a parametrized quad_form only where allowed)."""
    if not problem.parameters():
        raise ValueError("The problem has no parameters: there is nothing for a layer to take as input.")
    if any(leaf.is_complex() for leaf in [*problem.parameters(), *problem.variables()]):
        raise ValueError("The problem has complex parameters or variables; cvxlpgd supports real ones only.")
    if not problem.is_dcp():
        raise ValueError("The problem is not DCP (disciplined convex); CVXPY cannot canonicalize it.")
    _check_constraint_quad_forms(problem)
    if problem.is_dpp():
        return
    if allow_param_quad_form:
        with scopes.quad_form_dpp_scope():
            if problem.is_dpp():
                return
    hint = "" if allow_param_quad_form else " A parametrized quad_form(x, Q) is DPP only for gradient='lpgd'."
    raise ValueError(
        f"The problem is not DPP (disciplined parametrized programming); "
        f"the first offending expression is {_first_non_dpp(problem)}.{hint}"
    )


def _check_parameters(problem: cp.Problem, parameters: list) -> None:
    """Parameters: each a ``cp.Parameter``, listed once, exactly the problem's."""
    for i, p in enumerate(parameters):
        if not isinstance(p, cp.Parameter):
            raise TypeError(f"parameters[{i}] must be a cvxpy.Parameter, got {type(p).__name__}.")
        if any(q is p for q in parameters[:i]):
            raise ValueError(f"Parameter {p.name()!r} is listed twice in parameters.")
    given, needed = set(parameters), set(problem.parameters())
    if given - needed:
        names = sorted(p.name() for p in given - needed)
        raise ValueError(
            f"Parameters {names} are not in the problem: the layer's parameters must exactly match "
            "problem.parameters()."
        )
    if needed - given:
        names = sorted(p.name() for p in needed - given)
        raise ValueError(
            f"The problem's parameters {names} are missing from parameters: the layer's parameters "
            "must exactly match problem.parameters()."
        )


def _check_variables(problem: cp.Problem, variables: list) -> None:
    """Outputs: at least one, each a variable of the problem or a dual of one of its constraints."""
    primal = set(problem.variables())
    duals = {dv.id for con in problem.constraints for dv in con.dual_variables}
    if not variables:
        raise ValueError("variables is empty: name at least one variable or dual variable to output.")
    for i, v in enumerate(variables):
        if not isinstance(v, cp.Variable):
            raise TypeError(f"variables[{i}] must be a cvxpy.Variable, got {type(v).__name__}.")
        if v not in primal and v.id not in duals:
            raise ValueError(
                f"variables[{i}] ({v.name()!r}) is neither a variable of the problem nor the dual "
                "variable (constraint.dual_variables[0]) of one of its constraints: variables must be "
                "a subset of problem.variables() and of its constraints' dual variables."
            )


def _first_non_dpp(problem: cp.Problem) -> str:
    """The first objective or constraint expression that breaks DPP, as text."""
    for label, item in [("objective", problem.objective)] + [
        (f"constraint {i}", con) for i, con in enumerate(problem.constraints)
    ]:
        if not item.is_dcp(dpp=True):
            return f"{label}: {item}"
    return "the problem as a whole"


def _quad_forms(expression: cp.Expression) -> list[QuadForm]:
    """The ``quad_form`` atoms inside an expression tree."""
    found = [expression] if isinstance(expression, QuadForm) else []
    for arg in expression.args:
        found += _quad_forms(arg)
    return found


def _check_constraint_quad_forms(problem: cp.Problem) -> None:
    """A parametrized ``quad_form(x, P)`` is DPP only in the objective: inside a constraint CVXPY
    would read P's stored value as a constant, so the layer would ignore the tensor passed."""
    for i, con in enumerate(problem.constraints):
        for atom in _quad_forms(con):
            if atom.args[1].parameters():
                raise ValueError(
                    f"Constraint {i} ({con}) uses quad_form with a parameter matrix; a parametrized "
                    "quad_form is supported in the objective only (as in cvxpylayers). Write the "
                    "constraint with a factor parameter instead, e.g. cp.sum_squares(F @ x) <= t "
                    "with P = F'F."
                )
