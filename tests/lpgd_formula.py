"""The LPGD gradient recomputed outside the library: the formula on direct Clarabel solves.

Tests compare a layer's LPGD gradient with this reference, so that a wrong perturbation, sign,
side or Lagrangian gradient shows up as a wrong number, not only as a finite one. The formula
(docs/design.md): perturbed program P + rho I, c + s tau dx - rho x*, b - s tau dy; data gradient
G(z) = (1/2 xx' on P's upper triangle, yx' on A's pattern, -y, x); lower (G(z+) - G(z*)) / tau,
upper (G(z*) - G(z-)) / tau, central (G(z+) - G(z-)) / (2 tau).
"""

from __future__ import annotations

import clarabel
import numpy as np
import scipy.sparse as sp

from cvxlpgd import LPGD, CvxpyLayer
from cvxlpgd.program import DataGradient
from cvxlpgd.solvers.clarabel import cones


def _csc_positions(M: sp.csc_array) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of each stored entry, in CSC storage order."""
    return M.indices, np.repeat(np.arange(M.shape[1]), np.diff(M.indptr))


def _lagrangian_gradient(A: sp.csc_array, P: sp.csc_array | None, x: np.ndarray, y: np.ndarray):
    """Written out densely: dP = 1/2 xx' (upper-triangle storage), dA = yx', db = -y, dc = x."""
    dA = np.outer(y, x)[_csc_positions(A)]
    dP = None
    if P is not None:
        rows, cols = _csc_positions(P)
        dP = np.outer(x, x)[rows, cols] * np.where(rows == cols, 0.5, 1.0)
    return dA, -y, x, dP


def clarabel_solve(P, A, b, c, dims) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one conic program, solved by Clarabel directly at the tightest tolerance it
    reaches among 1e-10, 1e-9, 1e-8 (some small SOCPs end "AlmostSolved" at 1e-10)."""
    n = c.size
    P = sp.csc_matrix(P if P is not None else (n, n))
    for tol in (1e-10, 1e-9, 1e-8):
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = tol
        solution = clarabel.DefaultSolver(P, c, sp.csc_matrix(A), b, cones(dims), settings).solve()
        if str(solution.status) == "Solved":
            return np.array(solution.x), np.array(solution.z)
    raise AssertionError(f"Clarabel did not solve the reference program: {solution.status}")


def lpgd_formula_gradient(
    layer: CvxpyLayer, values: list[np.ndarray], out_grads: list[np.ndarray], config: LPGD
) -> list[np.ndarray]:
    """The LPGD gradient w.r.t. each parameter of one unbatched item (``values`` in the layer's
    parameter order, ``out_grads`` one per output), shaped like the parameters."""
    tau, rho = config.tau, config.rho
    compiled = layer.compiled(config)
    theta = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values])[None]
    program = compiled.maps.apply(theta).item(0)
    dx, dy = compiled.recovery.adjoint([np.asarray(g, dtype=np.float64)[None] for g in out_grads])
    dx, dy = dx[0], dy[0]
    n = program.c.size
    x_star, y_star = clarabel_solve(program.P, program.A, program.b, program.c, program.dims)
    P_rho = (program.P if program.P is not None else sp.csc_array((n, n))) + rho * sp.identity(n)
    hi, lo, scale = {"central": (1, -1, 2 * tau), "lower": (1, "star", tau), "upper": ("star", -1, tau)}[
        config.side
    ]
    points = {"star": (x_star, y_star)}
    for sign in {hi, lo} - {"star"}:  # only the re-solves the side needs: the other may be unbounded
        points[sign] = clarabel_solve(
            sp.triu(P_rho, format="csc"),
            program.A,
            program.b - sign * tau * dy,
            program.c + sign * tau * dx - rho * x_star,
            program.dims,
        )
    G = {key: _lagrangian_gradient(program.A, program.P, *z) for key, z in points.items()}
    data = [None if a is None else (a - b) / scale for a, b in zip(G[hi], G[lo], strict=True)]
    dA, db, dc, dP = (None if d is None else d[None] for d in data)
    flat = compiled.maps.adjoint(DataGradient(A=dA, b=db, c=dc, P=dP))[0]
    sizes = np.cumsum([np.size(v) for v in values])[:-1]
    return [block.reshape(np.shape(v)) for block, v in zip(np.split(flat, sizes), values, strict=True)]
