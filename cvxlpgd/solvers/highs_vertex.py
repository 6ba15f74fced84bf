"""The vertex of an LP basis, computed from that basis alone.

HiGHS's values come from its own factorization, whose floating-point rounding depends on the
whole model it holds. When several items are solved as one block-diagonal model, that model
holds the item's batch neighbours too; recomputing each item's primal and dual values from its
own basis, with one small dense LU of its own basis matrix, makes them a function of the item
and its basis alone (bitwise: the same basis gives the same bits whatever the neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# HiGHS's HighsBasisStatus codes (kLower, kBasic, kUpper, kZero, kNonbasic).
LOWER, BASIC, UPPER, ZERO = 0, 1, 2, 3


@dataclass(frozen=True)
class LpValues:
    """An LP point in HiGHS's terms: min c'x over L <= A x <= U, l <= x <= u, with
    ``c - A' row_dual - col_dual = 0``."""

    col_value: np.ndarray
    row_value: np.ndarray
    col_dual: np.ndarray
    row_dual: np.ndarray


@dataclass(frozen=True)
class LpBounds:
    """The bounds of one LP in HiGHS's terms."""

    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray


def vertex(
    A: np.ndarray, c: np.ndarray, bounds: LpBounds, col_codes: np.ndarray, row_codes: np.ndarray
) -> LpValues | None:
    """The basic solution of ``basis`` (status codes of the columns and rows of dense ``A``):
    nonbasic columns and rows sit exactly at their bounds, the basic columns solve the active
    rows, ``M x_B = L_N - A_NN x_N`` with ``M = A[active rows, basic columns]``, and the duals
    of the active rows solve ``M' y = c_B``. None when the codes are not a basis this reads
    (a nonbasic free variable not at zero, or a singular ``M``): the caller keeps HiGHS's values."""
    if np.any(col_codes > ZERO) or np.any(row_codes > ZERO):
        return None
    basic, active = col_codes == BASIC, row_codes != BASIC
    if np.count_nonzero(basic) != np.count_nonzero(active):
        return None
    x = np.where(col_codes == LOWER, bounds.col_lower, 0.0)
    x = np.where(col_codes == UPPER, bounds.col_upper, x)
    x[basic] = 0.0
    level = np.where(row_codes == UPPER, bounds.row_upper, bounds.row_lower)
    level = np.where(row_codes == ZERO, 0.0, level)
    M = A[np.ix_(active, basic)]
    try:
        x[basic] = np.linalg.solve(M, level[active] - A[active] @ x) if M.size else 0.0
        row_dual = np.zeros(A.shape[0])
        row_dual[active] = np.linalg.solve(M.T, c[basic]) if M.size else 0.0
    except np.linalg.LinAlgError:
        return None
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(row_dual))):
        return None
    row_value = A @ x
    row_value[active] = level[active]
    col_dual = c - A.T @ row_dual
    col_dual[basic] = 0.0
    return LpValues(x, row_value, col_dual, row_dual)
