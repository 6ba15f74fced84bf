"""The numpy side of one layer call: parameters -> solutions -> outputs, and back.

Forward:  theta --maps--> conic data --solver--> (x, y) --recovery--> outputs
Backward: output grads --recovery'--> (dx, dy) --LPGD or implicit--> data grads --maps'--> dtheta
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from cvxlpgd.batch import chunk_count, map_items
from cvxlpgd.compile import CompiledProblem, ProgramBatch
from cvxlpgd.cone import OPTIMAL_INACCURATE, Solution
from cvxlpgd.errors import PerturbedSolveError, SolverError, warn_user
from cvxlpgd.gradients.implicit import Adjoint, implicit_backward, implicit_solve
from cvxlpgd.gradients.lpgd import (
    LPGD,
    AdaptiveLPGD,
    Blocks,
    DataGradient,
    StepReport,
    adaptive_item_gradient,
    lpgd_item_gradient,
    perturbed_program,
    proximal_P,
    signs,
    stack,
)
from cvxlpgd.solvers import ConeSolver
from cvxlpgd.solvers.base import Workspace

FailurePolicy = Literal["raise", "nan"]
FAILURE_POLICIES = ("raise", "nan")
_SIDE_NAMES = {1: "lower (+tau)", -1: "upper (-tau)"}
_MAX_LISTED = 5


def _listing(statuses: dict[int, str]) -> str:
    items = list(statuses.items())
    text = ", ".join(f"item {i}: {s}" for i, s in items[:_MAX_LISTED])
    return text + (f", and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


@dataclass
class LayerCall:
    """Everything one forward call produces that its backward needs."""

    compiled: CompiledProblem
    solver: ConeSolver
    gradient: LPGD | AdaptiveLPGD | Literal["implicit"]
    solver_settings: dict
    on_failure: FailurePolicy
    executor: Executor | None
    program: ProgramBatch | None = None
    solutions: list[Solution] = field(default_factory=list)
    adjoints: list[Adjoint | None] = field(default_factory=list)
    # Solver objects with their factorizations, per chunk of the batch and matrix variant rho,
    # kept from the forward pass for the LPGD re-solves when the backend reuses them and every
    # item shares A and P. Owned by this call, so concurrent calls share nothing.
    workspaces: list[dict[float, Workspace]] = field(default_factory=list)

    def _workspace(self, chunk: int, rho: float) -> Workspace | None:
        if not (self.solver.reuses_workspace and self.program.shared_matrices):
            return None
        return self.workspaces[chunk].setdefault(rho, {})

    @property
    def failed(self) -> np.ndarray:
        return np.array([not s.usable for s in self.solutions], dtype=bool)

    def forward(self, theta: np.ndarray) -> list[np.ndarray]:
        self.program = self.compiled.maps.program(theta)
        if self.gradient == "implicit":
            self.solutions, self.adjoints = implicit_solve(
                self.program, self.solver.name, self.solver_settings, self.executor
            )
        else:
            program = self.program
            self.workspaces = [{} for _ in range(chunk_count(program.batch_size, self.executor))]
            self.solutions = map_items(
                lambda i, chunk: self.solver.solve(program.item(i), workspace=self._workspace(chunk, 0.0)),
                program.batch_size,
                self.executor,
            )
        self._check_statuses()
        x = np.stack([s.x for s in self.solutions])
        y = np.stack([s.y for s in self.solutions])
        failed = self.failed
        x[failed], y[failed] = np.nan, np.nan
        return self.compiled.recovery.outputs(x, y)

    def _check_statuses(self) -> None:
        bad = {i: s.status for i, s in enumerate(self.solutions) if not s.usable}
        name = self.solver.name
        if bad and self.on_failure == "raise":
            raw = {i: self.solutions[i].solver_status for i in bad}
            raise SolverError(
                f"{name} failed on {len(bad)} of {len(self.solutions)} batch item(s): {_listing(bad)} "
                f"({name} said: {_listing(raw)}). Pass on_failure='nan' to continue with NaN outputs "
                "and zero gradient for failed items.",
                bad,
            )
        if bad:
            warn_user(f"{name} failed on batch item(s) {_listing(bad)}; their outputs are NaN.")
        inaccurate = [i for i, s in enumerate(self.solutions) if s.status == OPTIMAL_INACCURATE]
        if inaccurate:
            warn_user(
                f"{name} solved {len(inaccurate)} batch item(s) only inaccurately (items "
                f"{inaccurate[:_MAX_LISTED]}); consider tighter solver_args or more iterations.",
            )

    def backward(self, output_grads: list[np.ndarray]) -> np.ndarray:
        """Output gradients (B, *shape) -> gradient w.r.t. theta (B, p)."""
        dx, dy = self.compiled.recovery.adjoint(output_grads)
        if self.gradient == "implicit":
            grads = implicit_backward(self.program, self.adjoints, dx, dy, self.executor)
        elif isinstance(self.gradient, AdaptiveLPGD):
            grads = self._adaptive(dx, dy if self.compiled.recovery.uses_duals else None, self.gradient)
        else:
            grads = self._lpgd(dx, dy if self.compiled.recovery.uses_duals else None, self.gradient)
        data = stack(grads, self.program)
        return self.compiled.maps.parameter_gradient(data.A, data.b, data.c, data.P)

    def _lpgd(self, dx: np.ndarray, dy: np.ndarray | None, config: LPGD) -> list[DataGradient | None]:
        program, failed = self.program, self.failed
        n = program.structure.n
        shared_P_rho = proximal_P(program.item(0).P, n, config.rho) if program.shared_matrices else None

        def item(i: int, chunk: int) -> tuple[DataGradient | None, dict[int, str]]:
            """The item's gradient (None if it cannot be had) and the re-solves that failed."""
            if failed[i]:
                return None, {}
            base, star = program.item(i), self.solutions[i]
            workspace = self._workspace(chunk, config.rho)
            P_rho = shared_P_rho if program.shared_matrices else proximal_P(base.P, n, config.rho)

            def resolve(sign: int) -> Solution:
                item_dy = None if dy is None else dy[i]
                problem = perturbed_program(base, P_rho, star, dx[i], item_dy, sign, config)
                return self.solver.solve(problem, warm_start=star, workspace=workspace)

            perturbed = {sign: resolve(sign) for sign in signs(config)}
            bad = {sign: z.status for sign, z in perturbed.items() if not z.usable}
            if not bad:
                return lpgd_item_gradient(program.structure, star, perturbed, config), {}
            if not config.fallback:
                return None, bad
            for sign in (1, -1):  # a one-sided config has not tried the other side yet
                if sign not in perturbed:
                    perturbed[sign] = resolve(sign)
                    if not perturbed[sign].usable:
                        bad[sign] = perturbed[sign].status
            usable = [sign for sign in (1, -1) if perturbed[sign].usable]
            if not usable:
                return None, bad
            one_sided = replace(config, side="lower" if usable[0] == 1 else "upper")
            return lpgd_item_gradient(program.structure, star, perturbed, one_sided), bad

        results = map_items(item, program.batch_size, self.executor)
        failures = {(i, sign): status for i, (_, bad) in enumerate(results) for sign, status in bad.items()}
        lost = {key: status for key, status in failures.items() if results[key[0]][0] is None}
        if lost:
            self._report_perturbed_failures(lost, config)
        elif failures:
            warn_user(
                f"LPGD (tau={config.tau}) fell back to a one-sided estimate where a re-solve failed: "
                f"{self._failure_text(failures)}.",
            )
        return [g for g, _ in results]

    def _adaptive(
        self, dx: np.ndarray, dy: np.ndarray | None, config: AdaptiveLPGD
    ) -> list[DataGradient | None]:
        """AdaptiveLPGD per item; failed re-solves are handled inside and reported in one warning."""
        program, failed, maps = self.program, self.failed, self.compiled.maps
        blocks = Blocks(
            c=not maps.c.constant or (maps.P is not None and not maps.P.constant),
            b=not maps.b.constant,
            A=not maps.A.constant,
        )

        def item(i: int, chunk: int) -> tuple[DataGradient | None, StepReport]:
            if failed[i]:
                return None, StepReport()
            base, star = program.item(i), self.solutions[i]
            workspace = self._workspace(chunk, 0.0)

            def solve(c_shift: np.ndarray, b_shift: np.ndarray | None) -> Solution:
                b = base.b if b_shift is None else base.b + b_shift
                problem = replace(base, c=base.c + c_shift, b=b)
                return self.solver.solve(problem, warm_start=star, workspace=workspace)

            item_dy = None if dy is None else dy[i]
            structure = program.structure
            return adaptive_item_gradient(structure, base, star, dx[i], item_dy, config, blocks, solve)

        results = map_items(item, program.batch_size, self.executor)
        reports = [r for _, r in results]
        solves = sum(r.failed_solves for r in reports)
        if solves:
            counts = {
                "used a smaller step or one side": sum(r.weakened for r in reports),
                "kept the small step's gradient for a degenerate block": sum(r.large_lost for r in reports),
                "got zero gradient (no step solved)": sum(r.lost for r in reports),
            }
            detail = "; ".join(f"{n} item(s) {what}" for what, n in counts.items() if n)
            warn_user(
                f"{config!r}: {solves} perturbed re-solve(s) were infeasible or unbounded in a batch "
                f"of {program.batch_size}; {detail}."
            )
        return [g for g, _ in results]

    @staticmethod
    def _failure_text(failures: dict[tuple[int, int], str]) -> str:
        return "; ".join(
            f"item {i}, {_SIDE_NAMES[sign]} side: {status}"
            for (i, sign), status in list(failures.items())[:_MAX_LISTED]
        )

    def _report_perturbed_failures(self, failures: dict[tuple[int, int], str], config: LPGD) -> None:
        message = (
            f"LPGD re-solve with tau={config.tau}, rho={config.rho} failed "
            f"({self._failure_text(failures)}). A perturbed cost can make the problem unbounded "
            "and a perturbed right-hand side infeasible. Remedies: a smaller tau, rho > 0 (keeps "
            "the perturbed problem bounded), the other side (side='lower' or 'upper'), or "
            "LPGD(fallback=True) to use the side that works."
        )
        if self.on_failure == "raise":
            first_sign = next(iter(failures))[1]
            raise PerturbedSolveError(
                message,
                {i: s for (i, _), s in failures.items()},
                side="lower" if first_sign == 1 else "upper",
                tau=config.tau,
            )
        warn_user(message + " Those items get zero gradient.")
