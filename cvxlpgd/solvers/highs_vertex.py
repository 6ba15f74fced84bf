"""The vertices of LP bases, each computed from its own basis alone.

HiGHS's values come from its own factorization, whose floating-point rounding depends on the
whole model it holds. When several items are solved as one block-diagonal model, that model
holds the item's batch neighbours too; recomputing each item's primal and dual values from its
own basis makes them a function of the item and its basis alone. The items of a group are
computed together, but every operation acts on one item at a time (a LAPACK solve per basis
matrix, sums along one item's row), so the bits do not depend on the group
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
) -> list[LpValues | None]:
    """The basic solution of each item's basis: ``c`` (k, n) its costs, ``lower`` / ``upper``
    (k, n + rows) the bounds of its columns then its rows, ``codes`` (k, n + rows) the status
    codes of its basis. Nonbasic columns and rows sit exactly at their bounds; the basic ones
    solve ``B z_B = -N z_N`` with ``B`` the basis columns of ``[A -I]``, and the row duals solve
    ``B' y = c_B``. None for an item whose codes this cannot read (not ``rows`` basic, a
    nonbasic variable at an infinite bound, a singular ``B``): the caller keeps HiGHS's values."""
    k, (rows, n) = codes.shape[0], system.A.shape
    basic = codes == BASIC
    readable = (np.count_nonzero(basic, axis=1) == rows) & np.all(codes <= ZERO, axis=1)
    values = np.where(codes == UPPER, upper, lower)
    values[(codes == ZERO) | basic] = 0.0
    readable &= np.all(np.isfinite(values), axis=1)
    results: list[LpValues | None] = [None] * k
    good = np.flatnonzero(readable).tolist()
    if not good:
        return results
    values, basic, c = values[good], basic[good], c[good]
    chosen = np.nonzero(basic)[1].reshape(len(good), rows)  # each item's basic variables, in order
    B = system.full.T[chosen].transpose(0, 2, 1)  # (items, rows, rows)
    right = -_row_sums(values[:, None, :] * system.full[None])
    costs = np.take_along_axis(np.hstack([c, np.zeros((len(good), rows))]), chosen, axis=1)
    try:
        z_B = np.linalg.solve(B, right[..., None])[..., 0]
        row_dual = np.linalg.solve(B.transpose(0, 2, 1), costs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return results  # a singular basis: rare enough to read every item of the group from HiGHS
    np.put_along_axis(values, chosen, z_B, axis=1)
    row_dual[basic[:, n:]] = 0.0
    col_dual = c - _row_sums(row_dual[:, None, :] * system.A.T[None])
    col_dual[basic[:, :n]] = 0.0
    finite = np.isfinite(values).all(axis=1) & np.isfinite(row_dual).all(axis=1)
    for j in np.flatnonzero(finite).tolist():
        results[good[j]] = LpValues(values[j, :n], values[j, n:], col_dual[j], row_dual[j])
    return results


def _row_sums(products: np.ndarray) -> np.ndarray:
    """Sums along the last axis, each row on its own (numpy's pairwise sum of one row does not
    depend on the other rows; a matrix product through BLAS could)."""
    return np.add.reduce(products, axis=-1)
