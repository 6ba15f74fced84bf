"""Raw-solver baselines: the layer's own conic data solved with scs / clarabel directly.

No torch and no CVXPY in the timed part: the conic data of the whole batch is extracted once
(outside the timing) from the layer's compiled maps, then each item is solved in a thread
pool with one worker per core, chunked like cvxlpgd's ``map_items``.

* ``build``:  ``scs.SCS(data, cone, **settings).solve()`` / ``clarabel.DefaultSolver(...).solve()``
  per item, i.e. setup (factorization) + solve every time: what a user without cvxlpgd writes.
* ``update``: one solver object per thread, ``update(b, c)`` then ``solve()`` per item: the
  best a hand-written loop can do when only ``b`` and ``c`` change (what cvxlpgd does).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import clarabel
import numpy as np
import scipy.sparse as sp
import scs

from cvxlpgd.cone import ConeProgram
from cvxlpgd.solvers import make_solver
from cvxlpgd.solvers.clarabel import cones
from cvxlpgd.solvers.scs import cone_dict


def items_of(layer: Any, theta: np.ndarray) -> list[ConeProgram]:
    """The conic programs the layer solves for the batch ``theta`` (B, p)."""
    compiled = layer.compiled()
    batch = compiled.maps.apply(theta)
    return [batch.item(i) for i in range(theta.shape[0])]


def _scs_builder(backend: Any) -> Callable[[ConeProgram], Any]:
    def build(prog: ConeProgram) -> Any:
        data = {"A": prog.A, "b": prog.b, "c": prog.c}
        if prog.P is not None:
            data["P"] = prog.P
        # the layer's settings for this program, its choice of linear solver included
        return scs.SCS(data, cone_dict(prog.dims), **backend.settings_for(prog))

    return build


def _clarabel_builder(backend: Any) -> Callable[[ConeProgram], Any]:
    settings = backend.settings

    def build(prog: ConeProgram) -> Any:
        opts = clarabel.DefaultSettings()
        opts.verbose = False
        opts.presolve_enable = False  # as the layer does
        for key, value in settings.items():
            setattr(opts, key, value)
        n = prog.c.size
        P = sp.csc_matrix(prog.P) if prog.P is not None else sp.csc_matrix((n, n))
        return clarabel.DefaultSolver(P, prog.c, sp.csc_matrix(prog.A), prog.b, cones(prog.dims), opts)

    return build


class RawBaseline:
    """Solve a list of conic programs with the raw solver, in a thread pool."""

    def __init__(self, solver: str, solver_args: dict, workers: int | None = None) -> None:
        self.solver = solver
        backend = make_solver(solver, solver_args)  # the layer's exact settings
        self.workers = workers or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="raw")
        build = _scs_builder if solver == "SCS" else _clarabel_builder
        self._build = build(backend)
        self._local = threading.local()

    def _solve_built(self, prog: ConeProgram) -> np.ndarray:
        solver = self._build(prog)
        if self.solver == "SCS":
            return solver.solve()["x"]
        return np.asarray(solver.solve().x)

    def _solve_updated(self, prog: ConeProgram) -> np.ndarray:
        solver = getattr(self._local, "solver", None)
        if solver is None:
            solver = self._local.solver = self._build(prog)
        elif self.solver == "SCS":
            solver.update(b=prog.b, c=prog.c)
        else:
            solver.update(q=prog.c, b=prog.b)
        if self.solver == "SCS":
            return solver.solve(False, None, None, None)["x"]
        return np.asarray(solver.solve().x)

    def _map(
        self, work: Callable[[ConeProgram], np.ndarray], programs: list[ConeProgram]
    ) -> list[np.ndarray]:
        if len(programs) <= 1:
            return [work(p) for p in programs]
        chunks = min(len(programs), self.workers)
        bounds = [len(programs) * k // chunks for k in range(chunks + 1)]

        def run(k: int) -> list[np.ndarray]:
            return [work(p) for p in programs[bounds[k] : bounds[k + 1]]]

        return [x for part in self.pool.map(run, range(chunks)) for x in part]

    def solve_build(self, programs: list[ConeProgram]) -> list[np.ndarray]:
        """Setup + solve per item."""
        return self._map(self._solve_built, programs)

    def solve_update(self, programs: list[ConeProgram]) -> list[np.ndarray]:
        """Per-thread solver objects, ``update(b, c)`` + solve per item (A, P must be shared)."""
        return self._map(self._solve_updated, programs)

    def close(self) -> None:
        self.pool.shutdown()
