"""The exact derivative of a conic program at its solution: one sparse linear solve with the KKT
system, ``P`` included (the limit tau -> 0 of LPGD, without re-solves).

With ``v = y - s``, the solution satisfies ``y = Pi(v)`` (projection onto the dual cone K*),
``s = Pi(v) - v`` (Moreau) and

    F(x, v) = [ P x + A' Pi(v) + c ;  A x + Pi(v) - v - b ] = 0,
    J = dF/d(x, v) = [[P, A' D], [A, D - I]],   D = dPi(v).

For incoming gradients (dx, dy), solve ``J' w = (dx, D' dy)``; then, since dF = (dP x + dA' y + dc,
dA x - db), the data gradients are  dc = -w1,  db = w2,  dA = -(y w1' + w2 x')  and
dP = -(w1 x' + x w1') on P's upper triangle (a diagonal entry: -w1_i x_i). Where J is singular
(a degenerate vertex: the derivative does not exist) or a cone has no projection derivative here,
there is no exact gradient and the caller falls back to LPGD's finite differences.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from diffcp._diffcp import dprojection_dense
from diffcp.cones import EXP, PSD, SOC, parse_cone_dict_cpp

from cvxlpgd.cone import ConeDims, ConeProgram, Solution
from cvxlpgd.program import ConeStructure, DataGradient

# A solve of J' w = g whose residual exceeds this fraction of |g| means J is (nearly) singular.
RESIDUAL_TOLERANCE = 1e-8


def supports(dims: ConeDims, canon_solver: str) -> bool:
    """Whether the projection derivative of every cone is available: not for power cones, and
    for PSD cones only in SCS's vectorization (diffcp's)."""
    return not dims.power and (not dims.psd or canon_solver == "SCS")


def exact_gradient(
    structure: ConeStructure, program: ConeProgram, star: Solution, dx: np.ndarray, dy: np.ndarray | None
) -> DataGradient | None:
    """The data gradient of ``dx' x* + dy' y*`` (None where the KKT system is singular)."""
    n, m = structure.n, structure.m
    x, v = star.x, star.y - star.s
    D = ProjectionDerivative.at(structure.dims, v)
    y = star.y
    g = np.concatenate([dx, np.zeros(m) if dy is None else D.transposed_times(dy)])
    w = _solve_transposed(_transposed_jacobian(structure, program, D), g)
    if w is None:
        return None
    w1, w2 = w[:n], w[n:]
    rows, cols = structure.A.indices, structure.A.columns
    dA = -(y[rows] * w1[cols] + w2[rows] * x[cols])
    dP = None
    if structure.P is not None:
        i, j = structure.P.indices, structure.P.columns
        dP = -np.where(i == j, w1[i] * x[i], w1[i] * x[j] + w1[j] * x[i])
    return DataGradient(A=dA, b=w2.copy(), c=-w1, P=dP)


Entries = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, columns, values of a sparse matrix


@dataclass(frozen=True)
class ProjectionDerivative:
    """D = dPi(v) for the projection onto the dual cone K*, block diagonal: ``diagonal`` on the
    first rows (1 on the zero cone's, where K* is free; the indicator of v > 0 on the
    nonnegative cone's), then a dense block per curved cone, at its first row. Kept as arrays:
    the KKT matrix is assembled from entries in one step, since a scipy matrix per block and per
    product cost more than the factorization on the benchmark problems (0.4-0.8 ms an item)."""

    diagonal: np.ndarray
    blocks: tuple[tuple[int, np.ndarray], ...]

    @classmethod
    def at(cls, dims: ConeDims, v: np.ndarray) -> ProjectionDerivative:
        row = dims.zero + dims.nonneg
        diagonal = np.concatenate([np.ones(dims.zero), (v[dims.zero : row] > 0) * 1.0])
        curved = [(SOC, k, k) for k in dims.soc] + [(PSD, k, k * (k + 1) // 2) for k in dims.psd]
        curved += [(EXP, 1, 3)] * dims.exp
        blocks = []
        for kind, size, width in curved:
            cone = parse_cone_dict_cpp([(kind, [size] if kind != EXP else size)])
            blocks.append((row, dprojection_dense(v[row : row + width], cone, True)))
            row += width
        return cls(diagonal, tuple(blocks))

    def transposed_times(self, u: np.ndarray) -> np.ndarray:
        """D' u."""
        first = self.diagonal.size
        parts = [self.diagonal * u[:first]]
        parts += [block.T @ u[start : start + block.shape[0]] for start, block in self.blocks]
        return np.concatenate(parts)

    def transposed_minus_identity(self) -> Entries:
        """The entries of D' - I."""
        index = np.arange(self.diagonal.size)
        parts = [(index, index, self.diagonal - 1.0)]
        for start, block in self.blocks:
            shifted = block.T - np.eye(block.shape[0])
            r, c = np.nonzero(shifted)
            parts.append((start + r, start + c, shifted[r, c]))
        return _joined(parts)

    def transposed_times_matrix(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> Entries:
        """The entries of D' A, for A given by its entries."""
        first = self.diagonal.size
        top = rows < first
        parts = [(rows[top], cols[top], values[top] * self.diagonal[rows[top]])]
        for start, block in self.blocks:
            inside = (rows >= start) & (rows < start + block.shape[0])
            touched, where = np.unique(cols[inside], return_inverse=True)
            sub = np.zeros((block.shape[0], touched.size))
            sub[rows[inside] - start, where] = values[inside]
            product = block.T @ sub
            r, c = np.nonzero(product)
            parts.append((start + r, touched[c], product[r, c]))
        return _joined(parts)


def _joined(parts: list[Entries]) -> Entries:
    rows, cols, values = (np.concatenate(part) for part in zip(*parts, strict=True))
    return rows, cols, values


def _transposed_jacobian(
    structure: ConeStructure, program: ConeProgram, D: ProjectionDerivative
) -> sp.csc_array:
    """J' = [[P, A'], [D' A, D' - I]] (P symmetric, from its upper triangle), assembled in one
    step from its blocks' entries, A's and P's positions read off their fixed patterns (scipy's
    block_array and a transpose cost 0.5-0.8 ms an item)."""
    n, m = structure.n, structure.m
    a_rows, a_cols, a_values = structure.A.indices, structure.A.columns, program.A.data
    da_rows, da_cols, da_values = D.transposed_times_matrix(a_rows, a_cols, a_values)
    d_rows, d_cols, d_values = D.transposed_minus_identity()
    parts = [
        (a_cols, n + a_rows, a_values),  # A' in the top right
        (n + da_rows, da_cols, da_values),  # D' A in the bottom left
        (n + d_rows, n + d_cols, d_values),  # D' - I in the bottom right
    ]
    if structure.P is not None:
        rows, cols, values = structure.P.indices, structure.P.columns, program.P.data
        off = rows != cols
        parts += [(rows, cols, values), (cols[off], rows[off], values[off])]
    rows, cols, values = _joined(parts)
    return sp.csc_array((values, (rows, cols)), shape=(n + m, n + m))


def _solve_transposed(JT: sp.csc_array, g: np.ndarray) -> np.ndarray | None:
    """``w`` with ``J' w = g``, or None when J is singular (the factorization fails, or the
    solution is not finite or does not satisfy the system)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", spla.MatrixRankWarning)
        try:
            w = spla.splu(JT).solve(g)
        except RuntimeError:  # "Factor is exactly singular"
            return None
    if not np.all(np.isfinite(w)):
        return None
    residual = np.linalg.norm(JT @ w - g)
    return w if residual <= RESIDUAL_TOLERANCE * max(np.linalg.norm(g), 1e-300) else None
