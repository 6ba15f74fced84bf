"""Geometric programs (``gp=True``): a DGP problem handled as its log-log DCP equivalent.

CVXPY's ``Dgp2Dcp`` reduction rewrites a disciplined geometric program in the logs of its
variables and of its positive parameters; the layer compiles and solves that DCP problem as
any other. The log of the inputs and the exp of the primal outputs are the first and the last
stage of a call (numpy, each with its adjoint), so either backward pass (LPGD or implicit)
carries both transforms and the solver side needs to know nothing about geometric programs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from cvxpy.reductions.dgp2dcp.dgp2dcp import Dgp2Dcp

from cvxlpgd.parameter_values import Batching


@dataclass(frozen=True)
class _Source:
    """Where one parameter of the DCP problem gets its value from."""

    index: int  # position in the user's parameter list
    log: bool  # True: the DCP parameter holds log(value); False: the value itself (an exponent)


class LogLogForm:
    """A DGP problem with its user-facing parameters and variables, as the DCP problem the layer
    compiles (``problem``, ``parameters``, ``variables``) plus the transforms between the two.

    A positive parameter becomes a new DCP parameter holding its log; one that CVXPY keeps as is
    (an exponent, as in ``x ** p``) stays itself, and one that appears both ways is fed to both.
    A requested variable becomes its log-space variable (the output is exponentiated back); a
    requested dual variable becomes the dual of the log-space constraint, which is what
    ``problem.solve(gp=True)`` reports as the constraint's dual value.
    """

    def __init__(self, problem: cp.Problem, parameters: Sequence, variables: Sequence) -> None:
        if not isinstance(problem, cp.Problem):
            raise TypeError(f"problem must be a cvxpy.Problem, got {type(problem).__name__}.")
        if not problem.is_dgp(dpp=True):
            detail = (
                "it is DGP but not DPP: parameters must enter as DGP requires of parameters"
                if problem.is_dgp()
                else "it is not a disciplined geometric program"
                + (" (it is DCP: drop gp=True)" if problem.is_dcp() else "")
            )
            raise ValueError(f"gp=True needs a problem for which problem.is_dgp(dpp=True) holds; {detail}.")
        reduction = Dgp2Dcp()
        self.problem, inverse = reduction.apply(problem)
        self.user_parameters = list(parameters) if isinstance(parameters, (list, tuple)) else parameters
        self.parameters, self._sources = self._map_parameters(reduction.param_id_map)
        self.variables, self._exponentiate = self._map_variables(
            problem, variables, reduction.var_id_map, inverse.cons_id_map
        )

    def _map_parameters(self, log_ids: dict[int, list[int]]) -> tuple[list, tuple[_Source, ...]]:
        """DCP parameters in a fixed order, each with the user parameter it is computed from.

        Objects that are not parameters of the problem map to themselves, so that the layer's own
        validation names them in its error message."""
        if not isinstance(self.user_parameters, list):
            return self.user_parameters, ()
        by_id = {p.id: p for p in self.problem.parameters()}
        mapped, sources = [], []
        for i, param in enumerate(self.user_parameters):
            images = []
            if isinstance(param, cp.Parameter) and param.id in log_ids:
                images.append((by_id[log_ids[param.id][0]], True))
            if not images or getattr(param, "id", None) in by_id:
                images.append((param, False))
            for image, log in images:
                mapped.append(image)
                sources.append(_Source(i, log))
        return mapped, tuple(sources)

    def _map_variables(
        self,
        problem: cp.Problem,
        variables: Sequence,
        log_ids: dict[int, list[int]],
        constraint_ids: dict[int, int],
    ) -> tuple[list, tuple[bool, ...]]:
        """DCP counterparts of the requested outputs, and which of them to exponentiate."""
        if not isinstance(variables, (list, tuple)):
            return variables, ()
        log_vars = {v.id: v for v in self.problem.variables()}
        dcp_constraints = {con.id: con for con in self.problem.constraints}
        duals = {
            dual.id: (con, k) for con in problem.constraints for k, dual in enumerate(con.dual_variables)
        }
        mapped, exponentiate = [], []
        for var in variables:
            var_id = getattr(var, "id", None)
            if var_id in log_ids:
                mapped.append(log_vars[log_ids[var_id][0]])
                exponentiate.append(True)
            elif var_id in duals:
                con, k = duals[var_id]
                mapped.append(dcp_constraints[constraint_ids[con.id]].dual_variables[k])
                exponentiate.append(False)
            else:
                mapped.append(var)
                exponentiate.append(False)
        return mapped, tuple(exponentiate)

    @property
    def log_indices(self) -> frozenset[int]:
        """The user's parameters that enter through their logs (so must be > 0)."""
        return frozenset(source.index for source in self._sources if source.log)

    def dcp_batching(self, batching: Batching) -> Batching:
        """Which of the DCP problem's parameters are batched, from the user's ``batching``."""
        return Batching(batching.batch_size, tuple(batching.batched_params[s.index] for s in self._sources))

    def stages(self) -> tuple[LogParameters, ExpVariables]:
        """The first and the last stage of one call (see pipeline.py)."""
        return LogParameters(self._sources), ExpVariables(self._exponentiate)


class LogParameters:
    """Stage: the user's parameter values -> the DCP problem's (logs of the positive ones, each
    value fed to every DCP parameter computed from it); the adjoint collects their gradients."""

    def __init__(self, sources: tuple[_Source, ...]) -> None:
        self.sources = sources
        self.values: list[np.ndarray] = []

    def apply(self, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.values = list(values)
        return [np.log(values[s.index]) if s.log else values[s.index] for s in self.sources]

    def adjoint(self, grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        total = [np.zeros_like(value) for value in self.values]
        for source, grad in zip(self.sources, grads, strict=True):
            total[source.index] += grad / self.values[source.index] if source.log else grad
        return total


class ExpVariables:
    """Stage: the DCP problem's outputs -> the DGP problem's (exp of primal variables, duals as
    they are)."""

    def __init__(self, exponentiate: tuple[bool, ...]) -> None:
        self.exponentiate = exponentiate
        self.outputs: list[np.ndarray] = []

    def apply(self, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.outputs = [np.exp(o) if e else o for o, e in zip(outputs, self.exponentiate, strict=True)]
        return self.outputs

    def adjoint(self, grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [g * o if e else g for g, o, e in zip(grads, self.outputs, self.exponentiate, strict=True)]
