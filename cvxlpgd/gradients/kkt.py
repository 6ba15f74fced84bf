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
    D = dual_projection_derivative(structure.dims, v)
    y = star.y
    P = _symmetric(program.P, n)
    J = sp.block_array([[P, program.A.T @ D], [program.A, D - sp.identity(m)]], format="csc")
    g = np.concatenate([dx, np.zeros(m) if dy is None else D.T @ dy])
    w = _solve_transposed(J, g)
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


def dual_projection_derivative(dims: ConeDims, v: np.ndarray) -> sp.csr_array:
    """dPi(v) for the projection onto the dual cone K*: the identity on the zero cone's rows (K*
    is free there), the indicator of v > 0 on the nonnegative cone, dense blocks for the others."""
    row = dims.zero + dims.nonneg
    blocks = [sp.identity(dims.zero, format="csr"), sp.diags_array((v[dims.zero : row] > 0) * 1.0)]
    curved = [(SOC, k, k) for k in dims.soc] + [(PSD, k, k * (k + 1) // 2) for k in dims.psd]
    curved += [(EXP, 1, 3)] * dims.exp
    for kind, size, rows in curved:
        cone = parse_cone_dict_cpp([(kind, [size] if kind != EXP else size)])
        blocks.append(sp.csr_array(dprojection_dense(v[row : row + rows], cone, True)))
        row += rows
    blocks = [block for block in blocks if block.shape[0]]
    return sp.csr_array(sp.block_diag(blocks, format="csr")) if blocks else sp.csr_array((0, 0))


def _symmetric(P: sp.csc_array | None, n: int) -> sp.csc_array:
    """The full symmetric matrix of an upper-triangle ``P`` (zero when there is none)."""
    if P is None:
        return sp.csc_array((n, n))
    upper = sp.triu(P, format="csc")
    return sp.csc_array(upper + upper.T - sp.diags_array(upper.diagonal()))


def _solve_transposed(J: sp.csc_array, g: np.ndarray) -> np.ndarray | None:
    """``w`` with ``J' w = g``, or None when J is singular (the factorization fails, or the
    solution is not finite or does not satisfy the system)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", spla.MatrixRankWarning)
        try:
            w = spla.splu(sp.csc_array(J.T)).solve(g)
        except RuntimeError:  # "Factor is exactly singular"
            return None
    if not np.all(np.isfinite(w)):
        return None
    residual = np.linalg.norm(J.T @ w - g)
    return w if residual <= RESIDUAL_TOLERANCE * max(np.linalg.norm(g), 1e-300) else None
