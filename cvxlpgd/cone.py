"""The currency between compilation, solvers and gradients: a conic program and its solution.

Convention (SCS):  minimize 1/2 x'Px + c'x  s.t.  Ax + s = b,  s in K,
with dual y in K* and optimality  Px + A'y + c = 0.  ``P`` holds the upper triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

OPTIMAL = "optimal"
OPTIMAL_INACCURATE = "optimal_inaccurate"
INFEASIBLE = "infeasible"
UNBOUNDED = "unbounded"
ITERATION_LIMIT = "iteration_limit"
SOLVER_ERROR = "solver_error"
INTERRUPTED = "interrupted"  # the solver saw Ctrl-C (SIGINT): the call raises KeyboardInterrupt
USABLE_STATUSES = frozenset({OPTIMAL, OPTIMAL_INACCURATE})
STATUSES = USABLE_STATUSES | {INFEASIBLE, UNBOUNDED, ITERATION_LIMIT, SOLVER_ERROR, INTERRUPTED}


# The kinds of cone, as ``ConeDims.kinds`` and a backend's ``cones`` name them.
CONE_KINDS = {
    "zero": "zero (equality)",
    "nonneg": "nonnegative",
    "soc": "second-order",
    "psd": "positive semidefinite",
    "exp": "exponential",
    "power": "power",
}


@dataclass(frozen=True)
class ConeDims:
    """Sizes of the cones, in the order the rows of ``A`` use them.

    Attributes:
        zero (int): rows of the zero cone (equalities).
        nonneg (int): rows of the nonnegative cone (inequalities).
        soc (tuple[int, ...]): the size of each second-order cone.
        psd (tuple[int, ...]): the side length of each PSD cone (n(n+1)/2 rows each).
        exp (int): the number of 3-dimensional exponential cones.
        power (tuple[float, ...]): the exponent of each 3-dimensional power cone.
    """

    zero: int = 0
    nonneg: int = 0
    soc: tuple[int, ...] = ()
    psd: tuple[int, ...] = ()  # side lengths; each takes n(n+1)/2 rows
    exp: int = 0  # number of 3-dimensional exponential cones
    power: tuple[float, ...] = ()  # exponents of 3-dimensional power cones

    @property
    def size(self) -> int:
        """Number of rows of ``A``."""
        return (
            self.zero
            + self.nonneg
            + sum(self.soc)
            + sum(k * (k + 1) // 2 for k in self.psd)
            + 3 * self.exp
            + 3 * len(self.power)
        )

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of cone present: a subset of ``CONE_KINDS``."""
        sizes = {
            "zero": self.zero,
            "nonneg": self.nonneg,
            "soc": len(self.soc),
            "psd": len(self.psd),
            "exp": self.exp,
            "power": len(self.power),
        }
        return frozenset(kind for kind, size in sizes.items() if size)

    @classmethod
    def from_cvxpy(cls, dims) -> ConeDims:
        """Read CVXPY's ``ConeDims`` object (``data["dims"]``)."""
        return cls(
            zero=int(dims.zero),
            nonneg=int(dims.nonneg),
            soc=tuple(int(k) for k in dims.soc),
            psd=tuple(int(k) for k in dims.psd),
            exp=int(dims.exp),
            power=tuple(float(a) for a in dims.p3d),
        )


@dataclass(frozen=True)
class Integrality:
    """Which columns of ``x`` are integer, and the column bounds CVXPY keeps out of ``A`` when it
    canonicalizes a mixed-integer problem (variable attributes, booleans as 0..1).

    Attributes:
        integer (numpy.ndarray): int64 indices of the integer columns.
        lower (numpy.ndarray): (n,) float64 column lower bounds, ``-inf`` where unbounded.
        upper (numpy.ndarray): (n,) float64 column upper bounds, ``+inf`` where unbounded.
    """

    integer: np.ndarray  # column indices
    lower: np.ndarray  # (n,), -inf where unbounded
    upper: np.ndarray  # (n,), +inf where unbounded


@dataclass
class ConeProgram:
    """One conic program in SCS form, what a solver backend receives:

        minimize 1/2 x'Px + c'x   s.t.   Ax + s = b,  s in K = dims

    ``P`` is upper-triangular CSC or ``None`` (a linear objective); the rows of ``A`` and ``b``
    take the cones in the order of ``ConeDims`` (zero cone first: ``A_i x = b_i``, then the
    nonnegative cone: ``A_i x <= b_i``, ...). With ``integrality`` set, the columns it lists must
    be integer and every column must lie within its ``lower`` / ``upper`` bounds, which are not
    rows of ``A``. A backend must not modify the arrays it is given.

    Attributes:
        A (scipy.sparse.csc_array): (m, n) float64, m = ``dims.size``.
        b (numpy.ndarray): (m,) float64.
        c (numpy.ndarray): (n,) float64.
        dims (ConeDims): the cones of the rows.
        P (scipy.sparse.csc_array | None): (n, n) float64, upper triangle only.
        integrality (Integrality | None): integer columns and column bounds.
    """

    A: sp.csc_array
    b: np.ndarray
    c: np.ndarray
    dims: ConeDims
    P: sp.csc_array | None = None
    integrality: Integrality | None = None  # only for mixed-integer programs


@dataclass
class Solution:
    """A primal-dual point ``(x, y, s)`` with the normalized and the solver's own status.

    What a backend returns: ``x`` (n,), ``s = b - Ax`` (m,) and the duals ``y`` (m,) in the dual
    cone, with ``Px + A'y + c = 0`` at an optimum (``y >= 0`` on ``A_i x <= b_i``). ``status`` is
    one of ``STATUSES``; with ``OPTIMAL`` or ``OPTIMAL_INACCURATE`` the point is used, otherwise
    the item failed (its arrays are ignored). A backend that cannot compute duals may return
    zeros for ``y`` when no parameter enters ``A`` or ``b`` and no dual is a layer output (LPGD
    then uses ``x`` only); a mixed-integer solution always does.

    Attributes:
        x (numpy.ndarray): (n,) float64 primal point.
        y (numpy.ndarray): (m,) float64 duals.
        s (numpy.ndarray): (m,) float64 slacks.
        status (str): one of ``STATUSES``.
        solver_status (str): the backend's own words for it.
        iterations (int): the backend's iteration count.
        basis (object | None): a simplex backend's final basis, from which re-solves start.
    """

    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    status: str
    solver_status: str = ""
    iterations: int = 0
    basis: object | None = None  # a simplex solver's final basis: re-solves of this item start there

    @property
    def usable(self) -> bool:
        """Whether the point may be used as a solution (possibly inaccurate)."""
        return self.status in USABLE_STATUSES
