"""``CvxpyLayer``: a CVXPY problem as a differentiable PyTorch module.

The torch-facing part only: options and problem go to ``core.LayerCore`` (numpy), tensors are
checked and converted by tensors.py, and one ``torch.autograd.Function`` runs a call's chain of
stages forward and its adjoints backward.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

import cvxpy as cp
import torch

from cvxlpgd.core import Call, LayerCore
from cvxlpgd.gradients import GradientMethod
from cvxlpgd.options import FailurePolicy, Options
from cvxlpgd.program import CompiledProblem
from cvxlpgd.ranks import warn_if_ranks_share_cores
from cvxlpgd.solvers import ConeSolver
from cvxlpgd.tensors import check_incoming_gradients, check_tensors, promoted_dtype, to_numpy, to_tensor


class CvxpyLayer(torch.nn.Module):
    """A parametrized CVXPY problem as a PyTorch layer.

    ``layer(*params)`` solves the problem for the given parameter tensors (each with an
    optional leading batch dimension) and returns a tuple with one tensor per entry of
    ``variables``. The backward pass is LPGD by default, or the implicit KKT derivative.

    The first eight arguments are those of cvxpylayers' ``CvxpyLayer``, in its order.

    Args:
        problem: a DPP ``cvxpy.Problem`` (a DGP one with ``gp=True``).
        parameters: every ``cp.Parameter`` of the problem, in the order tensors are passed
            (kept as ``layer.cvxpy_parameters``; ``layer.parameters()`` is torch's, and empty).
        variables: the variables to output; a constraint's ``dual_variables[0]`` outputs its dual.
        solver: ``"SCS"`` (default), ``"CLARABEL"``, ``"HIGHS"`` or, with gurobipy installed,
            ``"GUROBI"`` (any case, or ``cp.SCS``, ...),
            or an object implementing ``cvxlpgd.ConeSolver`` (a user's own backend, used with LPGD).
        gp: ``True`` for a disciplined geometric program (log-log convex; see ``cvxlpgd.dgp``).
        verbose: let the solver print its progress.
        canon_backend: CVXPY's canonicalization backend (``None``: CVXPY's default).
        solver_args: the solver's own settings, plus ``eps``, ``max_iters`` and ``verbose``, and
            cvxpylayers' keys: ``solve_method`` (the solver), ``mode`` (``"dense"``, ``"lsqr"``,
            ``"lsmr"``: the implicit gradient; ``"lpgd"``, ``"lpgd_right"``, ``"lpgd_left"``:
            LPGD central, lower, upper, with ``derivative_kwargs={"tau": ..., "rho": ...}``),
            ``n_jobs_forward`` / ``n_jobs_backward`` (threads; -1: one per core).
        gradient: ``"lpgd"`` (default: ``AdaptiveLPGD()``, scale-free, needs no tuning), an
            explicit ``LPGD(tau, rho, side)``, ``"implicit"`` or an ``Implicit(mode)``.
        on_failure: ``"raise"`` (default) or ``"nan"``: failed items give NaN outputs and zero
            gradient, the rest of the batch is unaffected.
        executor: a ``concurrent.futures.Executor`` for the per-item solves: threads, processes
            (``ProcessPoolExecutor``, loky) or a cluster (Dask's ``client.get_executor()``,
            ``cvxlpgd.executors.RayExecutor``); default: a thread pool with one worker per core.
        chunks: how many pieces a batch is cut into; default: one per worker of the executor.

    Attributes:
        cvxpy_parameters (list[cvxpy.Parameter]): the ``parameters``, in the order tensors are passed.
        variables (list[cvxpy.Variable]): the outputs, in order (duals as their dual variables).
        last_statuses (list[str]): each batch item's status in the last call, one of
            ``cvxlpgd.STATUSES``.
        last_iterations (list[int]): each batch item's solver iteration count in the last call.

    Raises:
        ValueError: the problem is not DPP (not DGP with ``gp=True``) or has no parameters; a
            parameter or variable is not in the problem, is listed twice or is missing; the
            solver, a solver setting, ``gradient``, ``on_failure`` or ``canon_backend`` is
            unknown; the solver cannot take the problem's cones or integer variables.
        TypeError: a solver setting has the wrong type, or a solver object breaks the
            ``cvxlpgd.ConeSolver`` protocol.
    """

    def __init__(
        self,
        problem: cp.Problem,
        parameters: list[cp.Parameter],
        variables: list[cp.Variable],
        solver: str | ConeSolver | None = None,
        gp: bool = False,
        verbose: bool = False,
        canon_backend: str | None = None,
        solver_args: Mapping[str, Any] | None = None,
        *,
        gradient: GradientMethod | str | None = None,
        on_failure: FailurePolicy = "raise",
        executor: Executor | None = None,
        chunks: int | None = None,
    ) -> None:
        super().__init__()
        options = Options.of_layer(solver, verbose, solver_args, gradient, on_failure, executor, chunks)
        self.core = LayerCore(problem, parameters, variables, options, gp=gp, canon_backend=canon_backend)

    def compiled(self, gradient: GradientMethod | str | None = None) -> CompiledProblem:
        """The conic maps the layer uses with its (or the given) gradient method: to inspect the
        conic data (``compiled().maps.apply(theta)``) or to time the raw solver on it."""
        return self.core.compiled(gradient)

    # torch.compile cannot trace a solver: the call stays out of the graph (one graph break),
    # so compiled models run it eagerly, quietly, and without recompiling per input shape.
    @torch.compiler.disable
    def forward(
        self,
        *params: torch.Tensor,
        solver_args: Mapping[str, Any] | None = None,
        warm_start: bool = False,
        gradient: GradientMethod | str | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Solve the problem for each batch item of ``params``.

        Args:
            *params: one real floating-point tensor per entry of ``cvxpy_parameters``, in that
                order, each of the parameter's shape or with a leading batch dimension
                ``(B, *shape)``; unbatched tensors are broadcast over the batch.
            solver_args: solver settings for this call, over the layer's (same keys as the
                constructor's).
            warm_start: start each item from the solution of the same batch position in the
                last call that also asked for warm starts, where the solver can use one (SCS;
                HIGHS for LPs); Clarabel, an interior-point method, ignores it.
            gradient: the gradient method for this call, over the layer's.

        Returns:
            One tensor per entry of ``variables``: shape ``(B, *variable.shape)`` when any
            parameter is batched (also for ``B = 1``), else ``variable.shape``; the promoted
            dtype of ``params`` (float32 in, float32 out) on the device of the first tensor.

        Raises:
            ValueError: a wrong number of tensors, a wrong shape, inconsistent batch sizes, NaN
                or Inf (naming the batch item), a value that violates a parameter's declared
                attributes, or conic data that overflow.
            TypeError: an argument is not a dense real floating-point tensor.
            RuntimeError: the call runs under a ``torch.func`` transform (``vmap``, ``jacrev``) or
                ``torch.jit.trace``.
            cvxlpgd.SolverError: an item failed with ``on_failure="raise"`` (``statuses`` names
                each); in the backward, ``cvxlpgd.PerturbedSolveError`` for an explicit
                ``LPGD``'s infeasible or unbounded re-solve.
        """
        check_tensors(params, self.core.user_parameters)
        options = self.core.options.updated(gradient=gradient, solver_args=solver_args)
        if options.uses_default_pool:
            warn_if_ranks_share_cores()
        # Decided here: inside the Function's forward, grad mode is always off.
        differentiable = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        call = self.core.call(options, differentiable, warm_start)
        try:
            return _SolveFunction.apply(call, *params)
        finally:
            self.core.finish(call)

    # The layer's settings, as given (read-only but for the executor).
    @property
    def solver(self) -> str | ConeSolver:
        return self.core.options.solver.spec

    @property
    def gradient(self) -> GradientMethod:
        return self.core.options.gradient

    @property
    def solver_args(self) -> dict[str, Any]:
        return dict(self.core.options.settings)

    @property
    def on_failure(self) -> FailurePolicy:
        return self.core.options.on_failure

    @property
    def chunks(self) -> int | None:
        return self.core.options.chunks

    @property
    def executor(self) -> Executor | None:
        """The forward's executor (``executor=`` or ``n_jobs_forward``'s pool); None: the default pool."""
        return self.core.options.chosen_executor()

    @executor.setter
    def executor(self, executor: Executor | None) -> None:
        self.core.options = replace(self.core.options, executor=executor, forward_workers=None)

    @property
    def backward_executor(self) -> Executor | None:
        """``n_jobs_backward``'s pool; None: the backward runs where the forward ran."""
        return self.core.options.chosen_backward_executor()

    @property
    def cvxpy_parameters(self) -> list[cp.Parameter]:
        return self.core.parameters

    @property
    def variables(self) -> list[cp.Variable]:
        return self.core.variables

    @property
    def gp(self) -> bool:
        """Whether the layer was built from a geometric program (``gp=True``)."""
        return self.core.dgp is not None

    @property
    def problem(self) -> cp.Problem:
        return self.core.problem

    @property
    def last_statuses(self) -> list[str]:
        """Per item of the last call: the normalized status."""
        return self.core.last_statuses

    @property
    def last_iterations(self) -> list[int]:
        """Per item of the last call: the solver's iteration count."""
        return self.core.last_iterations

    def extra_repr(self) -> str:
        names = [p.name() for p in self.cvxpy_parameters]
        return f"solver={self.solver!r}, gradient={self.gradient!r}, parameters={names}"


class _SolveFunction(torch.autograd.Function):
    """Forward: the call's chain of stages; backward: their adjoints (numpy, see pipeline.py)."""

    @staticmethod
    def forward(ctx, call: Call, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = call.forward([to_numpy(p) for p in params])
        ctx.call = call
        ctx.dtypes = [p.dtype for p in params]
        ctx.device_of = params[0]
        dtype = promoted_dtype(params)
        return tuple(to_tensor(out, params[0], dtype) for out in outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "CvxpyLayer's backward is first-order only: it cannot build a graph of its gradient "
                "(create_graph=True, e.g. a gradient penalty or a Hessian through the layer), and "
                "would return a wrong second derivative. Take second derivatives around the layer, "
                "or differentiate its outputs by finite differences."
            )
        check_incoming_gradients(grads)
        param_grads = ctx.call.backward([to_numpy(g) for g in grads])
        return (
            None,
            *(
                to_tensor(g, ctx.device_of, dtype) if needs else None
                for g, dtype, needs in zip(param_grads, ctx.dtypes, ctx.needs_input_grad[1:], strict=True)
            ),
        )
