"""The vertices of LP bases, each computed from its own basis alone.

HiGHS's values come from its own factorization, whose floating-point rounding depends on the
whole model it holds. When several items are solved as one block-diagonal model, that model
holds the item's batch neighbours too; recomputing each item's primal and dual values from its
own basis makes them a function of the item and its basis alone. The items of a group are
computed together, but every operation acts on one item at a time (a LAPACK solve per basis
matrix, sums along one item's row, elementwise arithmetic), so the bits do not depend on the group
(tests/test_stacked.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# HiGHS's HighsBasisStatus codes (kLower, kBasic, kUpper, kZero; kNonbasic is not read here).
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
class BasisSystem:
    """One LP's rows in the form a basis selects from: ``[A  -I] (x, r) = 0`` with ``r = A x``."""

    A: np.ndarray  # dense (rows, columns)
    full: np.ndarray  # [A  -I], (rows, columns + rows)

    @classmethod
    def of(cls, A: np.ndarray) -> BasisSystem:
        return cls(A, np.hstack([A, -np.eye(A.shape[0])]))


def vertices(
    system: BasisSystem,
    c: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    codes: np.ndarray,
) -> tuple[LpValues, np.ndarray]:
    """The basic solution of each item's basis, as (k, .) arrays, and which items it could read:
    ``c`` (k, n) their costs, ``lower`` / ``upper`` (k, n + rows) the bounds of their columns
    then their rows, ``codes`` (k, n + rows) the status codes of their bases. Nonbasic columns
    and rows sit exactly at their bounds; the basic ones solve ``B z_B = -N z_N`` with ``B`` the
    basis columns of ``[A -I]``, and the row duals solve ``B' y = c_B``. An item whose codes
    this cannot read (not ``rows`` basic, a nonbasic variable at an infinite bound, a singular
    ``B``) is marked unread; the caller keeps HiGHS's values for it."""
    k, (rows, n) = codes.shape[0], system.A.shape
    basic = codes == BASIC
    values = np.where(codes == UPPER, upper, lower)
    values[(codes == ZERO) | basic] = 0.0
    read = (np.count_nonzero(basic, axis=1) == rows) & np.all(codes <= ZERO, axis=1)
    read &= np.isfinite(values).all(axis=1)
    row_dual = np.full((k, rows), np.nan)
    col_dual = np.full((k, n), np.nan)
    good = np.flatnonzero(read)
    if good.size:
        chosen = np.nonzero(basic[good])[1].reshape(good.size, rows)  # each item's basic variables
        B = system.full.T[chosen].transpose(0, 2, 1)  # (items, rows, rows)
        right = -_row_sums(values[good, None, :] * system.full[None])
        costs = np.take_along_axis(np.hstack([c[good], np.zeros((good.size, rows))]), chosen, axis=1)
        try:
            z_B = np.linalg.solve(B, right[..., None])[..., 0]
            duals = np.linalg.solve(B.transpose(0, 2, 1), costs[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a singular basis: rare enough to read the group from HiGHS
            return LpValues(values[:, :n], values[:, n:], col_dual, row_dual), np.zeros(k, dtype=bool)
        chosen_values = values[good]
        np.put_along_axis(chosen_values, chosen, z_B, axis=1)
        values[good] = chosen_values
        duals[basic[good, n:]] = 0.0
        row_dual[good] = duals
        col_dual[good] = c[good] - _row_sums(duals[:, None, :] * system.A.T[None])
        col_dual[basic[:, :n] & read[:, None]] = 0.0
    read &= np.isfinite(values).all(axis=1) & np.isfinite(row_dual).all(axis=1)
    return LpValues(values[:, :n], values[:, n:], col_dual, row_dual), read


def _row_sums(products: np.ndarray) -> np.ndarray:
    """Sums along the last axis, each row on its own (numpy's pairwise sum of one row does not
    depend on the other rows; a matrix product through BLAS could)."""
    return np.add.reduce(products, axis=-1)


# A nonbasic variable whose reduced cost is within this many dual feasibility tolerances (relative
# to the largest cost) of zero could enter the basis at no cost: the optimum may be tied.
TIE_TOLERANCES = 10.0


def tied(
    values: LpValues,
    codes: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    c: np.ndarray,
    dual_tolerance: float,
) -> np.ndarray:
    """Which items' optimal vertex may not be unique, as a (k,) boolean array: a nonbasic column
    or row that can move (its bounds differ) with a reduced cost of about zero. The simplex then
    stops at one of several optimal vertices, and which one can depend on the rest of the model
    (in a stacked run: the batch neighbours); a unique optimum has none."""
    reduced = np.hstack([values.col_dual, values.row_dual])
    movable = (codes != BASIC) & (lower < upper)
    scale = np.maximum(1.0, np.abs(c).max(axis=1, initial=0.0))
    close = np.abs(reduced) <= TIE_TOLERANCES * dual_tolerance * scale[:, None]
    return np.any(movable & close, axis=1)
