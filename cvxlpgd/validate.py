"""Checks of what a user hands to a layer, raised where it enters and naming the culprit."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from cvxpy.atoms.quad_form import QuadForm
from cvxpy.utilities import scopes

from cvxlpgd.batch import worker_count
from cvxlpgd.integrality import MIP_SOLVER, is_mixed_integer
from cvxlpgd.solvers import SolverSpec, make_solver

# Parameter values are accepted up to this relative asymmetry / negative eigenvalue, so that
# finite-difference checks (which perturb one entry by ~1e-6) still go through.
ATTRIBUTE_TOLERANCE = 1e-5


def _describe(param: cp.Parameter, index: int) -> str:
    return f"parameter {index} ({param.name()!r}, shape {tuple(param.shape)})"


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


def check_executor(executor: object, chunks: object = None) -> Executor | None:
    """Any ``concurrent.futures.Executor``: a thread pool shares this process's memory, any other
    (process pools, loky, Dask's ``client.get_executor()``, ``cvxlpgd.executors.RayExecutor``)
    gets each chunk's work pickled. The batch is cut into ``chunks`` pieces, by default one per
    worker of the executor, which must then say how many it has."""
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1):
        raise ValueError(
            f"chunks must be a positive integer (or None: one per executor worker), got {chunks!r}."
        )
    if executor is None:
        return None
    if not isinstance(executor, Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor (a thread or process pool, loky's, Dask's "
            f"client.get_executor(), cvxlpgd.executors.RayExecutor) or None for cvxlpgd's default "
            f"thread pool, got {type(executor).__name__}."
        )
    if chunks is None and worker_count(executor) is None:
        raise ValueError(
            f"cvxlpgd cannot tell how many workers the {type(executor).__name__} has, so it cannot cut "
            "the batch into one chunk per worker: pass chunks= (e.g. the number of workers) to "
            "CvxpyLayer, or give the executor a max_workers attribute."
        )
    return executor


def check_problem(
    problem: object,
    parameters: object,
    variables: object,
    allow_param_quad_form: bool,
    solver: SolverSpec = "SCS",
) -> tuple[list[cp.Parameter], list[cp.Variable]]:
    """Validate the constructor arguments; return parameters and variables as lists."""
    if not isinstance(problem, cp.Problem):
        raise TypeError(f"problem must be a cvxpy.Problem, got {type(problem).__name__}.")
    for name, items in (("parameters", parameters), ("variables", variables)):
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple, got {type(items).__name__}.")
    parameters, variables = list(parameters), list(variables)
    if not problem.parameters():
        raise ValueError("The problem has no parameters: there is nothing for a layer to take as input.")
    if any(leaf.is_complex() for leaf in [*problem.parameters(), *problem.variables()]):
        raise ValueError("The problem has complex parameters or variables; cvxlpgd supports real ones only.")
    if not problem.is_dcp():
        raise ValueError("The problem is not DCP (disciplined convex); CVXPY cannot canonicalize it.")
    _check_constraint_quad_forms(problem)
    if not problem.is_dpp():
        in_scope = False
        if allow_param_quad_form:
            with scopes.quad_form_dpp_scope():
                in_scope = problem.is_dpp()
        if not in_scope:
            hint = (
                " A parametrized quad_form(x, Q) is DPP only for gradient='lpgd'."
                if not allow_param_quad_form
                else ""
            )
            raise ValueError(
                f"The problem is not DPP (disciplined parametrized programming); "
                f"the first offending expression is {_first_non_dpp(problem)}.{hint}"
            )
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
    if is_mixed_integer(problem):
        _check_mixed_integer(problem, variables, solver)
    return parameters, variables


def _check_mixed_integer(problem: cp.Problem, variables: list[cp.Variable], solver: SolverSpec) -> None:
    """A mixed-integer layer: a solver that takes integrality (so LPGD: the implicit gradient
    rejects HIGHS and user backends), primal outputs, parameters in the objective only."""
    names = sorted(
        v.name() for v in problem.variables() if v.attributes.get("boolean") or v.attributes.get("integer")
    )
    backend = make_solver(solver, None)
    if not backend.mixed_integer:
        raise ValueError(
            f"The problem has integer or boolean variables ({', '.join(names)}); {backend.name} solves "
            f"convex problems only. Use solver='{MIP_SOLVER}' for mixed-integer linear programs (or a "
            "solver object with mixed_integer = True)."
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
                "constraint duals are not defined for mixed-integer problems, so parameters may "
                "enter only the linear objective."
            )
    for v in problem.variables():
        bounds = v.attributes.get("bounds") or ()
        if any(isinstance(bound, cp.Expression) and bound.parameters() for bound in bounds):
            raise ValueError(
                f"The bounds of variable {v.name()!r} of this mixed-integer problem depend on "
                "parameters; parameters may enter only the linear objective."
            )


@dataclass(frozen=True)
class Inputs:
    """Validated call arguments: stacked float64 parameters and what outputs must look like."""

    theta: np.ndarray  # (B, total parameter size), C-order per parameter
    batch_size: int
    batched: bool
    batched_params: tuple[bool, ...]
    dtype: torch.dtype
    device: torch.device


def _check_attributes(param: cp.Parameter, index: int, value: np.ndarray, batched: bool) -> None:
    """Values must respect the parameter's declared attributes where a violation makes the conic
    program wrong or non-convex (a negative ``nonneg``, a clearly indefinite ``PSD``); where it
    stays well posed (0 for ``pos``, a slightly non-symmetric ``PSD``), warn with the fix."""
    attrs = param.attributes
    items = value if batched else value[None]
    scale = max(1.0, float(np.abs(items).max(initial=0.0)))
    tol = ATTRIBUTE_TOLERANCE * scale

    def where(bad: np.ndarray) -> str:
        return f" (batch item {int(np.flatnonzero(bad)[0])})" if batched else ""

    def fail(what: str, bad: np.ndarray) -> None:
        raise ValueError(f"{_describe(param, index)} is declared {what}, but its value is not{where(bad)}.")

    flat = items.reshape(items.shape[0], -1)
    for attr, bad in (
        ("nonneg", (flat < -tol).any(axis=1)),
        ("nonpos", (flat > tol).any(axis=1)),
        ("pos", (flat < 0).any(axis=1)),
        ("neg", (flat > 0).any(axis=1)),
    ):
        if attrs.get(attr) and bad.any():
            fail(attr, bad)
    for attr in ("pos", "neg"):
        if attrs.get(attr) and (flat == 0).any():
            warnings.warn(
                f"{_describe(param, index)} is declared {attr}, but its value has exact zeros; the "
                f"problem stays convex, so cvxlpgd solves it with them (declare it "
                f"{'nonneg' if attr == 'pos' else 'nonpos'} to say so).",
                UserWarning,
                stacklevel=4,
            )
    if any(attrs.get(a) for a in ("symmetric", "PSD", "NSD")):
        asym = np.abs(items - np.swapaxes(items, -1, -2)).reshape(items.shape[0], -1).max(axis=1) > tol
        if asym.any():
            warnings.warn(
                f"{_describe(param, index)} is declared {_symmetric_kind(attrs)}, but its value is not "
                f"symmetric{where(asym)}; cvxlpgd uses its symmetric part (Q + Q')/2, and its gradient "
                "is symmetric (cvxpylayers reads one triangle instead). Pass (Q + Q.mT) / 2 to be exact.",
                UserWarning,
                stacklevel=4,
            )
        for attr, sign in (("PSD", 1.0), ("NSD", -1.0)):
            if attrs.get(attr):
                sym = 0.5 * (items + np.swapaxes(items, -1, -2))
                low = np.linalg.eigvalsh(sign * sym).min(axis=1)
                if (low < -tol).any():
                    fail(attr, low < -tol)


def _symmetric_kind(attrs: dict) -> str:
    return next(a for a in ("PSD", "NSD", "symmetric") if attrs.get(a))


def check_inputs(params: Sequence[object], parameters: Sequence[cp.Parameter]) -> Inputs:
    """Validate tensors against the layer's parameters and stack them for the batch."""
    if len(params) != len(parameters):
        raise ValueError(
            f"The layer takes {len(parameters)} parameter tensors "
            f"({', '.join(repr(p.name()) for p in parameters)}), got {len(params)}. "
            "A tensor must be provided for each CVXPY parameter."
        )
    tensors, batch_sizes = [], []
    for i, (value, param) in enumerate(zip(params, parameters, strict=True)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{_describe(param, i)} must be a torch.Tensor, got {type(value).__name__}.")
        if torch._C._functorch.is_functorch_wrapped_tensor(value):
            raise RuntimeError(
                f"CvxpyLayer does not support torch.func transforms (vmap, grad, jacrev, ...), which "
                f"reached it through {_describe(param, i)}: the solve runs outside torch. Instead of "
                "vmap, give the parameters a leading batch dimension; for Jacobians, use "
                "torch.autograd.functional.jacobian."
            )
        if value.layout != torch.strided or value.is_meta:
            kind = "a meta tensor" if value.is_meta else f"layout {value.layout}"
            raise TypeError(f"{_describe(param, i)} must be a dense tensor with data, got {kind}.")
        if value.is_complex() or not value.is_floating_point():
            raise TypeError(
                f"{_describe(param, i)} must be a real floating-point tensor, got dtype {value.dtype}."
            )
        shape = tuple(param.shape)
        if tuple(value.shape) == shape:
            batch_sizes.append(None)
        elif value.dim() == len(shape) + 1 and tuple(value.shape[1:]) == shape:
            if value.shape[0] == 0:
                raise ValueError(f"{_describe(param, i)} has an empty batch dimension.")
            batch_sizes.append(int(value.shape[0]))
        else:
            expected = ", ".join(map(str, ("batch", *shape)))
            kind = "shape" if value.dim() in (len(shape), len(shape) + 1) else "dimensionality"
            raise ValueError(
                f"Invalid parameter {kind}: {_describe(param, i)} expects shape {shape} or ({expected}); "
                f"got {tuple(value.shape)}."
            )
        tensors.append(value)
    sizes = {b for b in batch_sizes if b is not None}
    if len(sizes) > 1:
        detail = ", ".join(f"{p.name()!r}: {b}" for p, b in zip(parameters, batch_sizes, strict=True) if b)
        raise ValueError(
            f"Inconsistent batch sizes: batched parameters disagree on the batch size ({detail})."
        )
    batch = sizes.pop() if sizes else 1
    columns = []
    for i, (value, param, b) in enumerate(zip(tensors, parameters, batch_sizes, strict=True)):
        array = value.detach().to("cpu", torch.float64).numpy()
        finite = np.isfinite(array)
        if not finite.all():
            where = ""
            if b is not None:
                where = f" at batch item {int(np.flatnonzero(~finite.reshape(b, -1).all(axis=1))[0])}"
            raise ValueError(f"{_describe(param, i)} contains NaN or Inf{where}.")
        _check_attributes(param, i, array, b is not None)
        flat = array.reshape(b or 1, -1)
        columns.append(np.broadcast_to(flat, (batch, flat.shape[1])))
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return Inputs(
        theta=np.ascontiguousarray(np.hstack(columns)) if columns else np.zeros((batch, 0)),
        batch_size=batch,
        batched=any(b is not None for b in batch_sizes),
        batched_params=tuple(b is not None for b in batch_sizes),
        dtype=dtype,
        device=tensors[0].device,
    )
