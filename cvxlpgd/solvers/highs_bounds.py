"""Inequality rows on a single variable (``x >= 0``, ``x <= 1``) as HiGHS column bounds.

The conic form keeps every bound as a row of ``A``; a simplex solver handles bounds implicitly,
so passing them as rows multiplies its basis size (the 12 x 12 grid shortest path: 672 rows, 144
without its bounds). Their duals come back from HiGHS's column duals (reduced costs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import ConeProgram


@dataclass(frozen=True)
class ColumnBounds:
    """What one right-hand side ``b`` makes of the bound rows: the column bounds HiGHS gets, and
    the share of its column's dual that each bound row takes. Both change only with ``b``, so a
    model keeps them while only the costs change (the forward chunk of a cost parameter, LPGD's
    re-solves of one), instead of recomputing them for every solution."""

    lower: np.ndarray
    upper: np.ndarray
    share: np.ndarray  # per bound row: 1 / (|a| * rows tied with it) if it sets its column's bound, else 0


@dataclass(frozen=True)
class BoundRows:
    """Which rows of ``A`` become column bounds: nonnegative-cone rows ``a x_j <= b_i``, ``a != 0``."""

    rows: np.ndarray  # row indices of the bound rows
    cols: np.ndarray  # the column each bounds
    coef: np.ndarray  # its coefficient a
    kept: np.ndarray  # the other rows, passed to HiGHS as rows, in order
    is_lower: np.ndarray  # whether it is a lower bound (a < 0)
    n: int
    has_ties: bool  # some column has two bound rows on the same side (a redundant model)

    @classmethod
    def of(cls, program: ConeProgram) -> BoundRows:
        A = sp.csr_array(program.A)
        m, n = A.shape
        counts = np.diff(A.indptr)
        single = np.flatnonzero(counts == 1)
        single = single[single >= program.dims.zero]
        coef = A.data[A.indptr[single]]
        single, coef = single[coef != 0], coef[coef != 0]
        kept = np.setdiff1d(np.arange(m), single)
        cols, is_lower = A.indices[A.indptr[single]], coef < 0
        key = cols * 2 + is_lower
        has_ties = np.unique(key).size < key.size
        return cls(
            rows=single, cols=cols, coef=coef, kept=kept, is_lower=is_lower, n=n, has_ties=bool(has_ties)
        )

    def column_bounds(self, b: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> ColumnBounds:
        """The tightest bounds of each column from ``b`` and the given column bounds, and how the
        bound rows that attain them share the column duals (rows tied on one side share equally)."""
        values, is_lower = b[self.rows] / self.coef, self.is_lower
        lower, upper = lower.copy(), upper.copy()
        np.maximum.at(lower, self.cols[is_lower], values[is_lower])
        np.minimum.at(upper, self.cols[~is_lower], values[~is_lower])
        attained = np.where(is_lower, values == lower[self.cols], values == upper[self.cols])
        ties = np.ones(self.rows.size)
        if self.has_ties:
            key = self.cols * 2 + is_lower
            counts = np.bincount(key[attained], minlength=2 * self.n)
            ties = np.maximum(counts[key], 1)
        return ColumnBounds(lower, upper, np.where(attained, 1.0 / (np.abs(self.coef) * ties), 0.0))

    def duals(self, bounds: ColumnBounds, col_dual: np.ndarray) -> np.ndarray:
        """Duals of the bound rows (>= 0) from HiGHS's column duals ``d`` (c + A'y - d = 0 over the
        kept rows): a column at its lower bound (d > 0) gives d / |a| to the row that sets that
        bound, one at its upper bound (d < 0) gives -d / |a| likewise. ``col_dual`` and
        ``bounds.share`` may carry a leading batch axis (stacked items), as may ``slack``'s."""
        pushing = np.where(self.is_lower, col_dual[..., self.cols], -col_dual[..., self.cols])
        return bounds.share * np.maximum(pushing, 0.0)

    def slack(self, b: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``b - A x`` on the bound rows."""
        return b[..., self.rows] - self.coef * x[..., self.cols]
