"""``cvxlpgd.jax.CvxpyLayer``: the layer for JAX, with cvxpylayers' JAX API, on the numpy core.

A call checks what only JAX arrays need (count, dtype, shapes), then runs ``core.LayerCore``'s
chain of stages on the host: directly when the inputs are concrete arrays, through
``jax.pure_callback`` while JAX traces (``jax.jit``). The gradient is a ``jax.custom_vjp`` whose
backward runs the chain's adjoints on the host, so LPGD, the default gradient and the implicit
one give the PyTorch layer's numbers. Under ``jax.vmap`` the host runs once per mapped element
(correct, but sequential: give the parameters a leading batch dimension to solve a batch in
parallel chunks).

Errors and warnings are the PyTorch layer's; under ``jax.jit`` JAX re-raises an error from the
host as its own runtime error, with the message in it.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np

from cvxlpgd.core import Call, LayerCore
from cvxlpgd.gradients import GradientMethod
from cvxlpgd.options import FailurePolicy, Options
from cvxlpgd.parameter_values import check_count, check_shapes, describe
from cvxlpgd.solvers import ConeSolver

# How many forward passes keep what their backward needs (see _Pending).
MAX_PENDING = 32


class CvxpyLayer:
    """A parametrized CVXPY problem as a differentiable JAX function.

    The arguments are those of ``cvxlpgd.CvxpyLayer`` (cvxpylayers' first eight, then
    ``gradient``, ``on_failure``, ``executor``, ``chunks``). ``layer(*params, solver_args=None,
    warm_start=False, gradient=None)`` returns a tuple with one array per entry of ``variables``,
    with the batching rules and dtypes of the PyTorch layer.
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
        options = Options.of_layer(solver, verbose, solver_args, gradient, on_failure, executor, chunks)
        self.core = LayerCore(problem, parameters, variables, options, gp=gp, canon_backend=canon_backend)
        self._pending = _Pending()

    def __call__(
        self,
        *params: Any,
        solver_args: Mapping[str, Any] | None = None,
        warm_start: bool = False,
        gradient: GradientMethod | str | None = None,
    ) -> tuple[jax.Array, ...]:
        """Solve for ``params``; ``solver_args`` and ``gradient`` override the layer's for this call."""
        params = _check_arrays(params, self.core.user_parameters)
        options = self.core.options.updated(gradient=gradient, solver_args=solver_args)
        batching = check_shapes([p.shape for p in params], self.core.user_parameters)
        dtype = jnp.result_type(*params)
        lead = (batching.batch_size,) if batching.batched else ()
        outputs = [jax.ShapeDtypeStruct(lead + tuple(v.shape), dtype) for v in self.core.variables]
        inputs = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params]
        key = jax.ShapeDtypeStruct((), jnp.int32)

        def forward(differentiable: bool) -> Callable[..., tuple[Any, ...]]:
            return lambda *values: self._host_forward(options, warm_start, differentiable, *values)

        @jax.custom_vjp
        def solve(*values: jax.Array) -> tuple[jax.Array, ...]:
            return _on_host(forward(False), outputs, values)

        def solve_fwd(*values: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array]:
            *solved, call_key = _on_host(forward(True), [*outputs, key], values)
            return tuple(solved), call_key

        def solve_bwd(call_key: jax.Array, grads: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
            return _on_host(self._host_backward, inputs, (call_key, *grads))

        solve.defvjp(solve_fwd, solve_bwd)
        return solve(*params)

    def _host_forward(
        self, options: Options, warm_start: bool, differentiable: bool, *values: Any
    ) -> tuple[Any, ...]:
        """float64 outputs, and with ``differentiable`` the key of the call for its backward."""
        call = self.core.call(options, differentiable, warm_start)
        try:
            outputs = call.forward([np.asarray(v, dtype=np.float64) for v in values])
        finally:
            self.core.finish(call)
        return (*outputs, self._pending.add(call)) if differentiable else tuple(outputs)

    def _host_backward(self, call_key: Any, *grads: Any) -> tuple[np.ndarray, ...]:
        call = self._pending.get(int(call_key))
        return tuple(call.backward([np.asarray(g, dtype=np.float64) for g in grads]))

    def compiled(self, gradient: GradientMethod | str | None = None):
        """The conic maps the layer uses with its (or the given) gradient method."""
        return self.core.compiled(gradient)

    @property
    def last_statuses(self) -> list[str]:
        return self.core.last_statuses

    @property
    def last_iterations(self) -> list[int]:
        return self.core.last_iterations

    def __getstate__(self) -> dict:
        return {"core": self.core}

    def __setstate__(self, state: dict) -> None:
        self.core, self._pending = state["core"], _Pending()


def _check_arrays(params: Sequence[Any], parameters: Sequence[cp.Parameter]) -> list[Any]:
    """Each value a real floating-point array (a JAX array, a tracer, or anything jnp takes)."""
    check_count(params, parameters)
    arrays = []
    for i, (value, param) in enumerate(zip(params, parameters, strict=True)):
        array = value if isinstance(value, jax.Array) else jnp.asarray(value)
        if not jnp.issubdtype(array.dtype, jnp.floating):
            raise TypeError(
                f"{describe(param, i)} must be a real floating-point array, got dtype {array.dtype}."
            )
        arrays.append(array)
    return arrays


def _on_host(
    host: Callable[..., tuple[Any, ...]], results: Sequence[jax.ShapeDtypeStruct], args: Sequence[Any]
) -> tuple[jax.Array, ...]:
    """``host(*args)`` cast to ``results``' dtypes: at once on concrete arrays (so its exceptions
    reach the caller as they are), or as a callback from the computation JAX is tracing."""

    def cast(*values: Any) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(out, dtype=r.dtype) for out, r in zip(host(*values), results, strict=True))

    if any(isinstance(a, jax.core.Tracer) for a in args):
        return tuple(jax.pure_callback(cast, tuple(results), *args, vmap_method="sequential"))
    return tuple(jnp.asarray(out) for out in cast(*args))


class _Pending:
    """The host-side calls whose backward may still come, by key: a ``custom_vjp`` residual must
    be an array, so the forward hands its backward the key of its ``Call``. A backward may run
    more than once (``jax.jacrev``), so a call is kept until ``MAX_PENDING`` newer ones push it out."""

    def __init__(self) -> None:
        self._calls: OrderedDict[int, Call] = OrderedDict()
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, call: Call) -> int:
        with self._lock:
            key = next(self._keys) % (2**31 - 1)
            self._calls[key] = call
            while len(self._calls) > MAX_PENDING:
                self._calls.popitem(last=False)
            return key

    def get(self, key: int) -> Call:
        with self._lock:
            call = self._calls.get(key)
        if call is None:
            raise RuntimeError(
                f"The forward pass of this backward is no longer kept: a layer keeps the last "
                f"{MAX_PENDING} forward passes that may be differentiated. Run each backward before "
                f"{MAX_PENDING} further differentiable calls of the layer (or raise "
                "cvxlpgd.jax.MAX_PENDING)."
            )
        return call
