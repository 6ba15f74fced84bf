"""Products of a large parameter matrix with a variable, compiled without CVXPY's parameter tensor.

CVXPY stores a parametrized cone program as a tensor with one column per parameter entry, and
reorders it for second-order (and exponential, power) cones with a sparse product whose
workspace has one slot per column of the tensor reshaped to (rows, (variables + 1) x
(parameter entries + 1)): for an ``n x n`` parameter in ``A @ x`` that is ``n^3`` slots
(25 GiB at ``n = 1500``), although the data have ``n^2`` entries.

So before CVXPY sees the problem, each product ``M @ w`` of a qualifying parameter matrix ``M``
(``A``, ``A.T``; ``w @ A`` is ``A.T @ w``) with a parameter-free vector ``w`` is replaced by a
new variable ``z``, and a placeholder row block ``z == 0 * sum(w)`` is added. CVXPY compiles the
rest (without that parameter, so its tensor stays small) and the placeholder rows; the compiler
then writes ``-M`` into the placeholder rows at ``w``'s columns, so that they read ``z = M w``.
The entries go straight from the parameter into the conic matrix: memory and time in proportion
to ``M``'s entries. The conic program gains ``z`` and its rows, an equivalent program: the same
solution, duals of the user's constraints and derivatives. Everything else takes CVXPY's path.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from cvxpy.atoms.affine.binary_operators import MulExpression
from cvxpy.atoms.affine.transpose import transpose
from cvxpy.constraints.constraint import Constraint
from cvxpy.expressions.expression import Expression

# A parameter matrix with at least this many entries takes the direct path; smaller ones stay with
# CVXPY, whose conic program (without the extra variable) is then exactly CVXPY's own.
MIN_ENTRIES = 10_000


@dataclass(frozen=True)
class MatrixProduct:
    """``output = M @ operand``, where ``M[i, j]`` is entry ``entries[i, j]`` (C order) of
    ``parameter``'s value; ``placeholder`` holds the rows that receive ``M``."""

    parameter: cp.Parameter
    entries: np.ndarray  # (output size, operand size), int64
    output: cp.Variable
    operand: cp.Variable
    placeholder: Constraint


@dataclass(frozen=True)
class Rewritten:
    """The problem CVXPY compiles (products replaced) and the products to place afterwards."""

    problem: cp.Problem
    products: tuple[MatrixProduct, ...]


def _plain_matrix(expr: Expression, min_entries: int) -> tuple[cp.Parameter, bool] | None:
    """``(P, transposed)`` when ``expr`` is a large attribute-free parameter matrix ``P`` or ``P.T``."""
    transposed = isinstance(expr, transpose) and expr.axes is None
    leaf = expr.args[0] if transposed else expr
    if not isinstance(leaf, cp.Parameter) or leaf.ndim != 2 or leaf.size < min_entries:
        return None
    if any(value not in (None, False) for value in leaf.attributes.values()):
        return None  # symmetric, diag, sparsity, sign...: CVXPY's lowering and checks apply
    return leaf, transposed


def _vector_operand(expr: Expression) -> bool:
    """A 1-D expression with a variable and no parameter (DPP then allows no other product)."""
    return expr.ndim == 1 and bool(expr.variables()) and not expr.parameters()


class _Rewriter:
    """Replaces qualifying products bottom-up, once per distinct expression object."""

    def __init__(self, min_entries: int) -> None:
        self.min_entries = min_entries
        self.products: list[MatrixProduct] = []
        self.operand_constraints: list[Constraint] = []
        self._done: dict[int, Expression] = {}

    def expression(self, expr: Expression) -> Expression:
        key = id(expr)
        if key not in self._done:
            self._done[key] = self._product(expr) or self._rebuilt(expr)
        return self._done[key]

    def constraint(self, con: Constraint) -> Constraint:
        args = [self.expression(a) for a in con.args]
        if all(new is old for new, old in zip(args, con.args, strict=True)):
            return con
        return con.copy(args=args)  # keeps the constraint's id, so its dual is found as before

    def _rebuilt(self, expr: Expression) -> Expression:
        if not expr.args:
            return expr
        args = [self.expression(a) for a in expr.args]
        if all(new is old for new, old in zip(args, expr.args, strict=True)):
            return expr
        return expr.copy(args=args)

    def _product(self, expr: Expression) -> cp.Variable | None:
        if not isinstance(expr, MulExpression):
            return None
        lhs, rhs = expr.args
        left = _plain_matrix(lhs, self.min_entries)
        if left is not None and _vector_operand(rhs):
            parameter, transposed = left
            operand = rhs
        else:
            right = _plain_matrix(rhs, self.min_entries)
            if right is None or not _vector_operand(lhs):
                return None
            parameter, transposed = right[0], not right[1]  # w @ P = P.T @ w
            operand = lhs
        index = np.arange(parameter.size, dtype=np.int64).reshape(parameter.shape)
        entries = index.T if transposed else index
        output = cp.Variable(entries.shape[0])
        operand_var = self._as_variable(operand)
        # 0 * sum(w) keeps w's columns in CVXPY's program even where w appears nowhere else.
        placeholder = output == 0 * cp.sum(operand_var)
        self.products.append(MatrixProduct(parameter, entries, output, operand_var, placeholder))
        return output

    def _as_variable(self, operand: Expression) -> cp.Variable:
        """The operand itself when it is a plain variable, else a new one equal to it."""
        if isinstance(operand, cp.Variable) and not any(
            value not in (None, False) for value in operand.attributes.values()
        ):
            return operand
        copy = cp.Variable(operand.shape)
        self.operand_constraints.append(copy == operand)
        return copy


def rewrite(problem: cp.Problem, min_entries: int = MIN_ENTRIES) -> Rewritten:
    """``problem`` with each qualifying parameter-matrix product replaced by a variable."""
    rewriter = _Rewriter(min_entries)
    objective = problem.objective
    new_objective_expr = rewriter.expression(objective.expr)
    if new_objective_expr is not objective.expr:
        objective = objective.copy(args=[new_objective_expr])
    constraints = [rewriter.constraint(con) for con in problem.constraints]
    if not rewriter.products:
        return Rewritten(problem, ())
    extra = rewriter.operand_constraints + [p.placeholder for p in rewriter.products]
    return Rewritten(cp.Problem(objective, constraints + extra), tuple(rewriter.products))
