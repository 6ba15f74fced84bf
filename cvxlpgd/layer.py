"""``CvxpyLayer``: a CVXPY problem as a differentiable PyTorch module (torch-facing part only)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import cvxpy as cp
import numpy as np
import torch

from cvxlpgd.batch import default_executor, thread_pool
from cvxlpgd.compat import split_peer_args
from cvxlpgd.compile import compile_problem
from cvxlpgd.cone import Solution
from cvxlpgd.dgp import LogLogForm
from cvxlpgd.gradients import GradientMethod, resolve_gradient
from cvxlpgd.pipeline import FAILURE_POLICIES, FailurePolicy, LayerCall
from cvxlpgd.program import CompiledProblem, ConicForm
from cvxlpgd.ranks import warn_if_ranks_share_cores
from cvxlpgd.solvers import ConeSolver, LayerSolver, lookup_solver
from cvxlpgd.validate import Inputs, check_executor, check_inputs, check_problem


class CvxpyLayer(torch.nn.Module):
    """A parametrized CVXPY problem as a PyTorch layer.

    ``layer(*params)`` solves the problem for the given parameter tensors (each with an
    optional leading batch dimension) and returns a tuple with one tensor per entry of
    ``variables``. The backward pass is LPGD by default, or the implicit KKT derivative.

    Args (the first eight as in cvxpylayers' ``CvxpyLayer``, in its order):
        problem: a DPP ``cvxpy.Problem`` (a DGP one with ``gp=True``).
        parameters: every ``cp.Parameter`` of the problem, in the order tensors are passed
            (kept as ``layer.cvxpy_parameters``; ``layer.parameters()`` is torch's, and empty).
        variables: the variables to output; a constraint's ``dual_variables[0]`` outputs its dual.
        solver: ``"SCS"`` (default), ``"CLARABEL"`` or ``"HIGHS"`` (any case, or ``cp.SCS``, ...),
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
        peer = split_peer_args(solver_args)
        self.dgp = LogLogForm(problem, parameters, variables) if gp else None
        if self.dgp is not None:
            problem, parameters, variables = self.dgp.problem, self.dgp.parameters, self.dgp.variables
        chosen_solver = _one_of("solver", solver, "solve_method", peer.solver)
        chosen_gradient = _one_of("gradient", gradient, "mode", peer.gradient)
        self.gradient = resolve_gradient("lpgd" if chosen_gradient is None else chosen_gradient)
        self.solver_args = {**peer.settings, **({"verbose": True} if verbose else {})}
        # Checked and configured once; `solver` shows what was given (a name or the object).
        self._solver = lookup_solver("SCS" if chosen_solver is None else chosen_solver, self.solver_args)
        self.solver = self._solver.spec
        if on_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}.")
        self.on_failure = on_failure
        self.executor, self.chunks = check_executor(executor, chunks), chunks
        if self.executor is None:
            self.executor = _pool(peer.forward_workers)
        self.backward_executor = _pool(peer.backward_workers)
        self.problem = problem
        self.canon_backend = canon_backend
        form = self.gradient.conic_form(self._solver.backend)
        self.cvxpy_parameters, self.variables = check_problem(
            problem, parameters, variables, allow_param_quad_form=form.quad_obj, solver=self._solver
        )
        # Validated just above for this form; other forms are checked when first compiled.
        self._compiled = {
            form: compile_problem(problem, self.cvxpy_parameters, self.variables, form, canon_backend)
        }
        # The parameter of each entry of the flat parameter vector, for messages.
        self._entry_names = tuple(name for p in self.cvxpy_parameters for name in [p.name()] * p.size)
        self._warm_starts: dict[ConicForm, list[Solution]] = {}
        self.last_statuses: list[str] = []  # per item of the last call: the normalized status
        self.last_iterations: list[int] = []  # and the solver's iteration count

    def compiled(self, gradient: GradientMethod | str | None = None) -> CompiledProblem:
        """The conic maps the layer uses with its (or the given) gradient method: to inspect the
        conic data (``compiled().maps.apply(theta)``) or to time the raw solver on it."""
        method = self.gradient if gradient is None else resolve_gradient(gradient)
        return self._compiled_for(method.conic_form(self._solver.backend), self._solver)

    def _compiled_for(self, form: ConicForm, solver: LayerSolver) -> CompiledProblem:
        """The problem compiled in the conic form a gradient method needs; built on first use."""
        if form not in self._compiled:
            check_problem(
                self.problem,
                self.cvxpy_parameters,
                self.variables,
                allow_param_quad_form=form.quad_obj,
                solver=solver,
            )
            self._compiled[form] = compile_problem(
                self.problem, self.cvxpy_parameters, self.variables, form, self.canon_backend
            )
        return self._compiled[form]

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
        """Solve for ``params``; ``solver_args`` and ``gradient`` override the layer's for this call.

        ``warm_start=True`` starts each item from the solution of the same batch position in the
        last call that also asked for warm starts, where the solver can use one (SCS; HIGHS for
        LPs); Clarabel, an interior-point method, ignores it.
        """
        if self.dgp is not None:
            params = self.dgp.log_parameters(params)
        peer = split_peer_args(solver_args)
        chosen = _one_of("gradient", gradient, "mode", peer.gradient)
        method = self.gradient if chosen is None else resolve_gradient(chosen)
        chosen_solver = self._solver if peer.solver is None else lookup_solver(peer.solver, self.solver_args)
        solver = chosen_solver.for_call(peer.settings)
        inputs = check_inputs(params, self.cvxpy_parameters)
        form = method.conic_form(solver)
        if self.executor is None and peer.forward_workers is None:
            warn_if_ranks_share_cores()
        executor = _first(_pool(peer.forward_workers), self.executor)
        if executor is None:
            executor = default_executor()
        backward_executor = _first(_pool(peer.backward_workers), self.backward_executor, executor)
        call = LayerCall(
            compiled=self._compiled_for(form, chosen_solver),
            solver=solver,
            method=method,
            on_failure=self.on_failure,
            executor=executor,
            backward_executor=backward_executor,
            chunks=self.chunks,
            parameter_names=self._entry_names,
            warm_starts=self._warm_starts.get(form) if warm_start else None,
        )
        # Decided here: inside the Function's forward, grad mode is always off.
        differentiable = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        try:
            outputs = _SolveFunction.apply(call, inputs, differentiable, *params)
            return outputs if self.dgp is None else self.dgp.exp_variables(outputs)
        finally:
            self.last_statuses = [s.status for s in call.solutions]
            self.last_iterations = [s.iterations for s in call.solutions]
            if warm_start:
                self._warm_starts[form] = call.solutions

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        # Executors do not pickle (the default pool is used after loading); warm starts are
        # a cache of the last call.
        state.update(executor=None, backward_executor=None, _warm_starts={})
        return state

    def extra_repr(self) -> str:
        names = [p.name() for p in self.cvxpy_parameters]
        return f"solver={self.solver!r}, gradient={self.gradient!r}, parameters={names}"


def _pool(workers: int | None) -> Executor | None:
    """The thread pool that cvxpylayers' ``n_jobs_forward`` / ``n_jobs_backward`` ask for, if any."""
    return None if workers is None else thread_pool(workers)


def _first(*executors: Executor | None) -> Executor | None:
    """The first executor given: a call's n_jobs_* key before the layer's own."""
    return next((e for e in executors if e is not None), None)


def _one_of(name: str, value: object, peer_key: str, peer_value: object) -> object:
    """An argument that may also come as a cvxpylayers ``solver_args`` key: at most one of the two."""
    if value is not None and peer_value is not None:
        raise ValueError(f"Give either {name}= or solver_args[{peer_key!r}], not both.")
    return value if value is not None else peer_value


class _SolveFunction(torch.autograd.Function):
    """Forward: solve; backward: the gradient method, both in numpy (see pipeline.py)."""

    @staticmethod
    def forward(
        ctx, call: LayerCall, inputs: Inputs, differentiable: bool, *params: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        outputs = call.forward(inputs.theta, differentiable)
        ctx.call, ctx.inputs = call, inputs
        ctx.shapes = [tuple(p.shape) for p in params]
        ctx.dtypes = [p.dtype for p in params]
        # Unbatched outputs are built from the item's own array, not as views of a batched
        # tensor: torch forbids in-place ops on views created inside a custom Function.
        return tuple(
            torch.from_numpy(np.array(out if inputs.batched else out[0])).to(
                dtype=inputs.dtype, device=inputs.device
            )
            for out in outputs
        )

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "CvxpyLayer's backward is first-order only: it cannot build a graph of its gradient "
                "(create_graph=True, e.g. a gradient penalty or a Hessian through the layer), and "
                "would return a wrong second derivative. Take second derivatives around the layer, "
                "or differentiate its outputs by finite differences."
            )
        call, inputs = ctx.call, ctx.inputs
        numpy_grads = [
            g.detach().to("cpu", torch.float64).numpy().reshape(inputs.batch_size, *shape)
            for g, shape in zip(grads, call.compiled.recovery.shapes, strict=True)
        ]
        dtheta = call.backward(numpy_grads)
        param_grads: list[torch.Tensor | None] = []
        offset = 0
        for shape, dtype, batched, needs in zip(
            ctx.shapes, ctx.dtypes, inputs.batched_params, ctx.needs_input_grad[3:], strict=True
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
        return (None, None, None, *param_grads)
