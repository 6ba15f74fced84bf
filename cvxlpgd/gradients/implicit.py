"""The implicit (KKT) derivative through diffcp, as cvxpylayers computes it.

diffcp solves the program and factors its derivative in one call, so in this mode the
forward pass goes through diffcp too. Its data must follow SCS's conventions (no ``P``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import diffcp
import numpy as np

from cvxlpgd.batch import map_items
from cvxlpgd.compile import ProgramBatch
from cvxlpgd.cone import (
    INFEASIBLE,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    SOLVER_ERROR,
    UNBOUNDED,
    ConeProgram,
    Solution,
)
from cvxlpgd.gradients.lpgd import DataGradient
from cvxlpgd.solvers.scs import cone_dict

# Up to this many rows + columns, diffcp's dense factorization (exact, cubic) is used; above,
# LSQR (what cvxpylayers uses). Measured: dense costs 330-550 ms per item at m + n = 936.
DENSE_LIMIT = 200

Adjoint = Callable[..., tuple]


def _solve_item(
    program: ConeProgram, solver: str, settings: Mapping[str, Any]
) -> tuple[Solution, Adjoint | None]:
    m, n = program.A.shape
    if program.dims.power:
        raise NotImplementedError(
            "gradient='implicit' does not support power cones (diffcp has none); use LPGD."
        )
    mode = "dense" if m + n <= DENSE_LIMIT else "lsqr"
    try:
        result = diffcp.solve_and_derivative_internal(
            program.A.copy(),
            program.b,
            program.c,
            cone_dict(program.dims),
            mode=mode,
            solve_method="SCS" if solver == "SCS" else "Clarabel",
            **settings,
        )
    except diffcp.SolverError as error:
        failed = Solution(
            x=np.full(n, np.nan),
            y=np.full(m, np.nan),
            s=np.full(m, np.nan),
            status=_status(str(error)),
            solver_status=str(error),
        )
        return failed, None
    raw = str(result["info"]["status"])
    solution = Solution(x=result["x"], y=result["y"], s=result["s"], status=_status(raw), solver_status=raw)
    return solution, result["DT"] if solution.usable else None


def _status(raw: str) -> str:
    """Normalize the SCS-style status text that diffcp reports for either solver."""
    text = raw.lower().removeprefix("solver scs returned status ")  # diffcp's SolverError text
    if "inaccurate" in text and text.startswith(("solved", "optimal")):
        return OPTIMAL_INACCURATE
    if text in ("solved", "optimal"):
        return OPTIMAL
    if "infeasible" in text:
        return INFEASIBLE
    if "unbounded" in text:
        return UNBOUNDED
    return SOLVER_ERROR


def implicit_solve(
    program: ProgramBatch, solver: str, settings: Mapping[str, Any], executor: Executor | None
) -> tuple[list[Solution], list[Adjoint | None]]:
    pairs = map_items(
        lambda i, _: _solve_item(program.item(i), solver, settings), program.batch_size, executor
    )
    return [p[0] for p in pairs], [p[1] for p in pairs]


def implicit_backward(
    program: ProgramBatch,
    adjoints: list[Adjoint | None],
    dx: np.ndarray,
    dy: np.ndarray,
    executor: Executor | None,
) -> list[DataGradient | None]:
    pattern = program.structure.A
    rows, cols = pattern.indices, pattern.columns

    def item(i: int, _chunk: int) -> DataGradient | None:
        if adjoints[i] is None:
            return None
        dA, db, dc = adjoints[i](dx[i], dy[i], np.zeros_like(dy[i]))
        values = np.asarray(dA.tocsr()[rows, cols]).ravel()
        return DataGradient(A=values, b=np.asarray(db), c=np.asarray(dc), P=None)

    return map_items(item, program.batch_size, executor)
