"""The LPGD gradient recomputed at the CVXPY level, without the library's compiled maps.

Tests compare a layer's LPGD gradient with this reference, so that a wrong perturbation, sign,
side, Lagrangian gradient, parameter map or solution recovery shows up as a wrong number. None of
cvxlpgd's compilation, solves or gradient code runs here: the perturbed problems are CVXPY problems
solved by CVXPY (Clarabel, tight), and the gradient is read off CVXPY's expression values. A layer
supplies only its problem, parameters and outputs.

For a sign s = +1 or -1 the perturbed problem is the layer's problem with

* the objective plus  s tau <dv, v>  for every output variable v (dv: its incoming gradient),
  plus  rho/2 ||v - v*||^2  for every variable of the problem (v*: the unperturbed solution);
* for every output dual lambda of a constraint  e(x) in S  whose Lagrangian term is
  sigma <lambda, e>: the constraint  e(x) + sigma s tau dlambda in S. This adds
  s tau <dlambda, lambda>  to the Lagrangian, as the conic form's  b - s tau dy  does.

At a point z = (x, lambda) the Lagrangian is  L(theta; z) = f0(x; theta) + sum_i sigma_i
<lambda_i, e_i(x; theta)>  over all constraints, and LPGD's estimate is its parameter gradient
G(z) = dL/dtheta, differenced by side: lower (G(z+) - G(z*)) / tau, upper (G(z*) - G(z-)) / tau,
central (G(z+) - G(z-)) / (2 tau). In a DPP problem L is affine in theta for fixed z, so central
differences of CVXPY's expression values in theta are exact up to rounding (O(step^2) otherwise).

CVXPY's dual conventions, measured by tests/test_lpgd_formula.py (shifting e by eps d changes
the optimal value by sigma eps <lambda, d>):

=================================  =====  ====================================================
constraint                         sigma  e(x)
=================================  =====  ====================================================
``lhs <= rhs``, ``lhs >= rhs``     +1     ``lhs - rhs`` as CVXPY stores it (``>=`` swaps the
                                          sides), lambda >= 0
``lhs == rhs``, ``Zero(e)``        +1     ``lhs - rhs``, ``e``; lambda free
``NonNeg(e)``                      -1     ``e``, lambda >= 0
``SOC(t, X)``                      -1     ``(t, X)``, lambda = (u, Z) in the cone
=================================  =====  ====================================================

The proximal term here acts on the problem's CVXPY variables; the library's acts on the conic
variables, which are the same only where canonicalization adds none (an LP, ``quad_form`` or
``sum_squares`` of a variable). With an auxiliary (``sum_squares(x - a)`` adds t = x - a, an
epigraph ``norm(x) <= r`` adds t >= |x|) the two differ for rho > 0, and the library's result
then depends on where the solver leaves an auxiliary that is not unique.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import cvxpy as cp
import numpy as np
from cvxpy.constraints import SOC, Equality, Inequality, NonNeg, Zero
from problems import finite_difference

from cvxlpgd import LPGD, CvxpyLayer

# sigma of each supported constraint class: the Lagrangian term is sigma <lambda, e(x)>.
LAGRANGIAN_SIGN: dict[type, int] = {Inequality: 1, Equality: 1, Zero: 1, NonNeg: -1, SOC: -1}
# The points each side differences, (high, low): +1 is the objective plus tau <dv, v>, 0 unperturbed;
# the estimate is (G(z_high) - G(z_low)) / (tau (high - low)).
SIDES = {"central": (1, -1), "lower": (1, 0), "upper": (0, -1)}
# Clarabel's tolerances, tightest first (some small SOCPs end "AlmostSolved" at 1e-10).
TOLERANCES = (1e-10, 1e-9, 1e-8)
# The central-difference step in theta: any step is exact for an affine L; this one keeps the
# rounding error at about 1e-13 |L|.
THETA_STEP = 1e-3


def sigma(constraint: cp.Constraint) -> int:
    """The sign of the constraint's Lagrangian term (table in the module docstring)."""
    for kind, sign in LAGRANGIAN_SIGN.items():
        if isinstance(constraint, kind):
            return sign
    raise NotImplementedError(f"No dual sign convention here for {type(constraint).__name__} constraints.")


def parts(constraint: cp.Constraint) -> list[cp.Expression]:
    """e(x), one expression per dual variable of ``constraint``."""
    if isinstance(constraint, (Inequality, Equality)):
        return [constraint.expr]
    return list(constraint.args)


def shifted(constraint: cp.Constraint, shifts: list[cp.Expression]) -> cp.Constraint:
    """The constraint with e(x) + shift in place of e(x) (a new object, same class and data)."""
    if isinstance(constraint, (Inequality, Equality)):
        return constraint.copy([constraint.args[0] + shifts[0], constraint.args[1]])
    return constraint.copy([arg + shift for arg, shift in zip(constraint.args, shifts, strict=True)])


@dataclass(frozen=True)
class Point:
    """A primal-dual point of the layer's problem: values per variable, duals per constraint."""

    primal: list[np.ndarray]
    duals: list[list[np.ndarray]]


@dataclass
class ReferenceProblem:
    """The perturbed problems of one layer, with the perturbation as CVXPY parameters (so CVXPY
    compiles them once): ``weights`` multiply each variable in the objective, ``rho`` weighs
    their squares, ``shifts`` move each output dual's constraint. All zero: the layer's problem."""

    problem: cp.Problem
    variables: list[cp.Variable]  # the original problem's, in its order
    weights: list[cp.Parameter]
    rho: cp.Parameter
    shifts: dict[int, list[cp.Parameter]]  # constraint index -> one parameter per dual variable

    @classmethod
    def of(cls, original: cp.Problem, output_constraints: set[int]) -> ReferenceProblem:
        if not isinstance(original.objective, cp.Minimize):
            raise NotImplementedError("The reference handles Minimize problems only.")
        variables = original.variables()
        weights = [cp.Parameter(v.shape) for v in variables]
        rho = cp.Parameter(nonneg=True)
        linear = sum(cp.sum(cp.multiply(w, v)) for w, v in zip(weights, variables, strict=True))
        squares = sum(cp.sum_squares(v) for v in variables)
        objective = original.objective.expr + linear + rho / 2 * squares
        constraints, shifts = [], {}
        for i, con in enumerate(original.constraints):
            sigma(con)  # fails early on an unsupported constraint class
            if i in output_constraints:
                shifts[i] = [cp.Parameter(d.shape) for d in con.dual_variables]
                constraints.append(shifted(con, shifts[i]))
            else:
                constraints.append(con.copy())
        return cls(cp.Problem(cp.Minimize(objective), constraints), variables, weights, rho, shifts)

    def solve(self, weights: list[np.ndarray], rho: float, shifts: dict[int, list[np.ndarray]]) -> Point:
        """The solution with the objective plus <weights, v> + rho/2 |v|^2 and the shifts."""
        self.rho.value = rho
        for parameter, value in zip(self.weights, weights, strict=True):
            parameter.value = value
        for i, values in shifts.items():
            for parameter, value in zip(self.shifts[i], values, strict=True):
                parameter.value = value
        for tol in TOLERANCES:
            with warnings.catch_warnings():
                # A parametrized quad_form is not DPP for CVXPY: it is solved with the values inserted.
                warnings.filterwarnings("ignore", message=".*not DPP")
                # An inaccurate solve is retried at the next tolerance (and fails at the last).
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                self.problem.solve(cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
            if self.problem.status == cp.OPTIMAL:
                break
        else:
            raise AssertionError(f"Clarabel did not solve the reference problem: {self.problem.status}")
        return Point(
            primal=[np.array(v.value, dtype=np.float64) for v in self.variables],
            duals=[_dual_values(con) for con in self.problem.constraints],
        )


@lru_cache(maxsize=8)
def _reference(layer: CvxpyLayer) -> ReferenceProblem:
    return ReferenceProblem.of(layer.problem, set(_outputs(layer)[1]))


def _dual_values(constraint: cp.Constraint) -> list[np.ndarray]:
    """Per dual variable, shaped like it (CVXPY returns an SOC's X part as a column)."""
    values = constraint.dual_value if len(constraint.dual_variables) > 1 else [constraint.dual_value]
    duals = constraint.dual_variables
    return [np.reshape(np.asarray(v, dtype=np.float64), d.shape) for v, d in zip(values, duals, strict=True)]


def _outputs(layer: CvxpyLayer) -> tuple[dict[int, int], dict[int, dict[int, int]]]:
    """Where each output sits: {variable index: output} and {constraint index: {dual: output}}."""
    problem = layer.problem
    variables = {v.id: i for i, v in enumerate(problem.variables())}
    duals = {d.id: (i, j) for i, c in enumerate(problem.constraints) for j, d in enumerate(c.dual_variables)}
    by_variable: dict[int, int] = {}
    by_constraint: dict[int, dict[int, int]] = {}
    for k, output in enumerate(layer.variables):
        if output.id in variables:
            by_variable[variables[output.id]] = k
        else:
            i, j = duals[output.id]
            by_constraint.setdefault(i, {})[j] = k
    return by_variable, by_constraint


@contextmanager
def _restored(leaves: list[cp.Leaf]) -> Iterator[None]:
    """Leave the caller's parameters and variables with the values they had."""
    saved = [leaf.value for leaf in leaves]
    try:
        yield
    finally:
        for leaf, value in zip(leaves, saved, strict=True):
            leaf.value = value


def lagrangian_terms(problem: cp.Problem, point: Point) -> list[tuple[set[int], Callable[[], float]]]:
    """L(theta; z)'s terms, f0 and each sigma_i <lambda_i, e_i(x)>, as functions of the current
    parameter values, each with the ids of the parameters it holds."""
    objective = problem.objective.expr
    terms = [({p.id for p in objective.parameters()}, lambda: float(objective.value))]
    for con, duals in zip(problem.constraints, point.duals, strict=True):

        def term(con: cp.Constraint = con, duals: list[np.ndarray] = duals) -> float:
            inner = sum(float(np.sum(d * e.value)) for d, e in zip(duals, parts(con), strict=True))
            return sigma(con) * inner

        terms.append(({p.id for p in con.parameters()}, term))
    return terms


def parameter_gradient(layer: CvxpyLayer, values: list[np.ndarray], point: Point) -> list[np.ndarray]:
    """G(z) = dL/dtheta for each of the layer's parameters, by central differences of CVXPY's values
    of the terms the parameter enters (values set with ``save_value``: CVXPY's checks on every
    assignment would take most of the time)."""
    params, problem = layer.cvxpy_parameters, layer.problem
    for v, value in zip(problem.variables(), point.primal, strict=True):
        v.save_value(value)
    terms = lagrangian_terms(problem, point)
    grads = []
    for k, param in enumerate(params):
        entered = [term for ids, term in terms if param.id in ids]

        def at(theta: list[np.ndarray], entered: list[Callable[[], float]] = entered) -> float:
            for p, value in zip(params, theta, strict=True):
                p.save_value(value)
            return sum(term() for term in entered)

        symmetric = any(param.attributes.get(a) for a in ("symmetric", "PSD", "NSD"))
        grads.append(finite_difference(at, values, k, symmetric, step=THETA_STEP))
    return grads


def lpgd_formula_gradient(
    layer: CvxpyLayer, values: list[np.ndarray], out_grads: list[np.ndarray], config: LPGD
) -> list[np.ndarray]:
    """The LPGD gradient w.r.t. each parameter of one unbatched item (``values`` in the layer's
    parameter order, ``out_grads`` one per output), shaped like the parameters."""
    tau, rho = config.tau, config.rho
    problem, outputs = layer.problem, layer.variables
    values = [np.asarray(v, dtype=np.float64) for v in values]
    grads = [np.reshape(np.asarray(g, np.float64), o.shape) for g, o in zip(out_grads, outputs, strict=True)]
    by_variable, by_constraint = _outputs(layer)
    variables = problem.variables()
    dv = [grads[by_variable[i]] if i in by_variable else np.zeros(v.shape) for i, v in enumerate(variables)]

    def dual_shifts(s: int) -> dict[int, list[np.ndarray]]:
        """sigma s tau dlambda for each dual of each constraint with an output dual (0 if not one)."""
        return {
            i: [
                sigma(problem.constraints[i]) * s * tau * grads[slots[j]] if j in slots else np.zeros(d.shape)
                for j, d in enumerate(problem.constraints[i].dual_variables)
            ]
            for i, slots in by_constraint.items()
        }

    with _restored([*layer.cvxpy_parameters, *variables]):
        for p, value in zip(layer.cvxpy_parameters, values, strict=True):
            p.value = value
        reference = _reference(layer)
        star = reference.solve([0.0 * d for d in dv], 0.0, dual_shifts(0))
        points = {0: star}
        high, low = SIDES[config.side]
        for s in {high, low} - {0}:  # only the re-solves the side needs: the other may be unbounded
            weights = [s * tau * d - rho * x for d, x in zip(dv, star.primal, strict=True)]
            points[s] = reference.solve(weights, rho, dual_shifts(s))
        G_high, G_low = (parameter_gradient(layer, values, points[k]) for k in (high, low))
    return [(a - b) / (tau * (high - low)) for a, b in zip(G_high, G_low, strict=True)]
