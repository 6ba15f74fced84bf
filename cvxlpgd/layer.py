"""``CvxpyLayer``: a CVXPY problem as a differentiable PyTorch module (torch-facing part only)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any, Literal

import cvxpy as cp
import numpy as np
import torch

from cvxlpgd.batch import default_executor
from cvxlpgd.compile import CompiledProblem, compile_problem
from cvxlpgd.gradients.lpgd import LPGD, AdaptiveLPGD
from cvxlpgd.pipeline import FAILURE_POLICIES, FailurePolicy, LayerCall
from cvxlpgd.solvers import make_solver, solver_name
from cvxlpgd.validate import Inputs, check_inputs, check_problem

Gradient = LPGD | AdaptiveLPGD | Literal["lpgd", "implicit"]


def resolve_gradient(gradient: object) -> LPGD | AdaptiveLPGD | Literal["implicit"]:
    """``"lpgd"`` -> ``AdaptiveLPGD()`` (the scale-free default); an ``LPGD``, ``AdaptiveLPGD`` or
    ``"implicit"`` as is; anything else raises."""
    if isinstance(gradient, (LPGD, AdaptiveLPGD)):
        return gradient
    if isinstance(gradient, str) and gradient.lower() == "lpgd":
        return AdaptiveLPGD()
    if isinstance(gradient, str) and gradient.lower() == "implicit":
        return "implicit"
    raise ValueError(f"gradient must be 'lpgd', 'implicit' or an LPGD(...) instance, got {gradient!r}.")


class CvxpyLayer(torch.nn.Module):
    """A parametrized CVXPY problem as a PyTorch layer.

    ``layer(*params)`` solves the problem for the given parameter tensors (each with an
    optional leading batch dimension) and returns a tuple with one tensor per entry of
    ``variables``. The backward pass is LPGD by default, or the implicit KKT derivative.

    Args:
        problem: a DPP ``cvxpy.Problem``.
        parameters: every ``cp.Parameter`` of the problem, in the order tensors are passed.
        variables: the variables to output; a constraint's ``dual_variables[0]`` outputs its dual.
        solver: ``"SCS"`` or ``"CLARABEL"`` (any case, or ``cp.SCS`` / ``cp.CLARABEL``).
        gradient: ``"lpgd"`` (default, ``AdaptiveLPGD()``: no tuning), an ``LPGD(tau, rho, side)``
            with an absolute step, an ``AdaptiveLPGD(...)``, or ``"implicit"``.
        solver_args: the solver's own settings, plus ``eps`` and ``max_iters``.
        on_failure: ``"raise"`` (default) or ``"nan"``: failed items give NaN outputs and zero
            gradient, the rest of the batch is unaffected.
        executor: a ``concurrent.futures.Executor`` for the per-item solves; default: a
            thread pool with one worker per core.
    """

    def __init__(
        self,
        problem: cp.Problem,
        parameters: list[cp.Parameter],
        variables: list[cp.Variable],
        *,
        solver: str = "SCS",
        gradient: Gradient = "lpgd",
        solver_args: Mapping[str, Any] | None = None,
        on_failure: FailurePolicy = "raise",
        executor: Executor | None = None,
    ) -> None:
        super().__init__()
        self.solver = solver_name(solver)
        self.gradient = resolve_gradient(gradient)
        self.solver_args = dict(solver_args or {})
        make_solver(self.solver, self.solver_args)  # validates the settings now
        if on_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}.")
        self.on_failure = on_failure
        self.executor = executor
        self.problem = problem
        self.parameters, self.variables = check_problem(
            problem, parameters, variables, allow_param_quad_form=self.gradient != "implicit"
        )
        self._compiled: dict[tuple[str, bool], CompiledProblem] = {}
        self._compiled_for(self.gradient)
        self.last_statuses: list[str] = []

    def _compiled_for(self, gradient: LPGD | AdaptiveLPGD | str) -> CompiledProblem:
        """The conic form a gradient needs: LPGD keeps P for the chosen solver; diffcp wants SCS's
        conventions and no P. Compiled on first use and kept."""
        key = ("SCS", False) if gradient == "implicit" else (self.solver, True)
        if key not in self._compiled:
            if gradient == "implicit":
                check_problem(self.problem, self.parameters, self.variables, allow_param_quad_form=False)
            self._compiled[key] = compile_problem(self.problem, self.parameters, self.variables, *key)
        return self._compiled[key]

    def forward(
        self,
        *params: torch.Tensor,
        solver_args: Mapping[str, Any] | None = None,
        gradient: Gradient | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Solve for ``params``; ``solver_args`` and ``gradient`` override the layer's for this call."""
        method = self.gradient if gradient is None else resolve_gradient(gradient)
        settings = {**self.solver_args, **(solver_args or {})}
        solver = make_solver(self.solver, settings)
        inputs = check_inputs(params, self.parameters)
        call = LayerCall(
            compiled=self._compiled_for(method),
            solver=solver,
            gradient=method,
            solver_settings=solver.settings,
            on_failure=self.on_failure,
            executor=self.executor or default_executor(),
        )
        try:
            return _SolveFunction.apply(call, inputs, *params)
        finally:
            self.last_statuses = [s.status for s in call.solutions]

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["executor"] = None  # executors do not pickle; the default pool is used after loading
        return state

    def extra_repr(self) -> str:
        names = [p.name() for p in self.parameters]
        return f"solver={self.solver!r}, gradient={self.gradient!r}, parameters={names}"


class _SolveFunction(torch.autograd.Function):
    """Forward: solve; backward: LPGD or implicit, both in numpy (see pipeline.py)."""

    @staticmethod
    def forward(ctx, call: LayerCall, inputs: Inputs, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = call.forward(inputs.theta)
        ctx.call, ctx.inputs = call, inputs
        ctx.shapes = [tuple(p.shape) for p in params]
        ctx.dtypes = [p.dtype for p in params]
        result = []
        for out in outputs:
            tensor = torch.from_numpy(np.ascontiguousarray(out)).to(dtype=inputs.dtype, device=inputs.device)
            result.append(tensor if inputs.batched else tensor[0])
        return tuple(result)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        call, inputs = ctx.call, ctx.inputs
        shapes = call.compiled.recovery.shapes
        numpy_grads = []
        for g, shape in zip(grads, shapes, strict=True):
            array = (
                np.zeros((inputs.batch_size, *shape))
                if g is None
                else g.detach().to("cpu", torch.float64).numpy()
            )
            numpy_grads.append(array.reshape(inputs.batch_size, *shape))
        dtheta = call.backward(numpy_grads)
        param_grads: list[torch.Tensor | None] = []
        offset = 0
        for shape, dtype, batched, needs in zip(
            ctx.shapes, ctx.dtypes, inputs.batched_params, ctx.needs_input_grad[2:], strict=True
        ):
            size = int(np.prod(shape[1:] if batched else shape))
            block = dtheta[:, offset : offset + size]
            offset += size
            if not needs:
                param_grads.append(None)
                continue
            block = block if batched else block.sum(axis=0)
            grad = torch.from_numpy(np.ascontiguousarray(block).reshape(shape))
            param_grads.append(grad.to(dtype=dtype, device=inputs.device))
        return (None, None, *param_grads)
